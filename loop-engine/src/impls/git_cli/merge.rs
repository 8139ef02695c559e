//! The merge of [`GitCli`]: computed without touching any checkout (`merge-tree`,
//! `commit-tree`) and landed with a compare-and-swap on the target ref, so a conflict or a
//! crash never leaves a half-merged branch behind, and the user's working tree matters only
//! when the target itself is checked out there. Every merge commit carries a `Loop-Run-Id`
//! trailer, which is how a repeated merge of the same run is recognised.

use std::path::{Path, PathBuf};

use super::plumbing::{GitCli, failed, os_args};
use crate::backend::{MergeOutcome, MergeRequest, VcsError};
use crate::domain::MergeStrategy;

/// The trailer that marks a run's merge commit on the target branch.
pub const RUN_ID_TRAILER: &str = "Loop-Run-Id";

impl GitCli {
    /// The commit of this run's merge on `target`, if it already holds one.
    pub(super) async fn find_run_merge(
        &self,
        req: &MergeRequest,
        run_exists: bool,
    ) -> Result<Option<String>, VcsError> {
        let grep = format!("--grep={RUN_ID_TRAILER}: {}", req.run_id);
        let target = format!("refs/heads/{}", req.target_branch);
        let mut args = vec![
            "log".to_owned(),
            "--format=%H".to_owned(),
            "--max-count=1".to_owned(),
            "--fixed-strings".to_owned(),
            grep,
            target,
        ];
        // The run's merge commit is never part of the run branch itself, so excluding the run
        // branch's history keeps the search short on long-lived targets.
        if run_exists {
            args.push(format!("^refs/heads/{}", req.run_branch));
        }
        args.push("--".to_owned());
        let sha = self.text(&req.repo, &args).await?;
        Ok((!sha.is_empty()).then_some(sha))
    }

    /// Moves `target` from `old` (`None`: it must not exist yet) to `new`, failing if it moved.
    pub(super) async fn compare_and_swap(
        &self,
        req: &MergeRequest,
        old: Option<&str>,
        new: &str,
    ) -> Result<(), VcsError> {
        let target_ref = format!("refs/heads/{}", req.target_branch);
        let reason = format!("loop: merge run {} ({})", req.run_id, req.run_branch);
        let out = self
            .git(
                &req.repo,
                [
                    "update-ref",
                    "-m",
                    &reason,
                    &target_ref,
                    new,
                    old.unwrap_or(""),
                ],
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(VcsError::Conflict {
                detail: format!(
                    "the branch {} changed while the run branch {} was being merged into it; \
                     nothing was merged, the run branch is kept ({})",
                    req.target_branch,
                    req.run_branch,
                    out.stderr_text()
                ),
            })
        }
    }

    /// Why the merge must wait for the user when `target` is checked out in `checkout`, or
    /// `None` when that checkout can be moved along (no staged or unstaged changes to tracked
    /// files).
    async fn checkout_blocks(
        &self,
        req: &MergeRequest,
        checkout: &Path,
        primary: bool,
    ) -> Result<Option<String>, VcsError> {
        if !primary {
            // A linked worktree may be another run's, with an agent working in it right now.
            return Ok(Some(format!(
                "the merge target {} is checked out in the worktree {}; switch that worktree \
                 to another branch, then merge again (`loopctl merge {}`); the run branch {} \
                 is kept",
                req.target_branch,
                checkout.display(),
                req.run_id,
                req.run_branch
            )));
        }
        // Raw stdout: each line starts with a two-letter status that may be a space.
        let out = self
            .run(
                checkout,
                ["status", "--porcelain=v1", "--untracked-files=no"],
            )
            .await?;
        let dirty = String::from_utf8_lossy(&out.stdout);
        if dirty.trim().is_empty() {
            return Ok(None);
        }
        let files: Vec<&str> = dirty.lines().filter_map(|l| l.get(3..)).take(5).collect();
        Ok(Some(format!(
            "the merge target {} is checked out in {} with uncommitted changes ({}); commit or \
             stash them, then merge again (`loopctl merge {}`); nothing was merged, the run \
             branch {} is kept",
            req.target_branch,
            checkout.display(),
            files.join(", "),
            req.run_id,
            req.run_branch
        )))
    }

    /// Lands `new` on a target that is checked out in `checkout`: the index and the working
    /// tree move first (refusing to overwrite untracked files), then the ref; if the ref moved
    /// under us, the checkout is moved back. `Ok(Some(reason))` when untracked files are in
    /// the way (nothing changed).
    async fn advance_checked_out_target(
        &self,
        req: &MergeRequest,
        checkout: &Path,
        old: &str,
        new: &str,
    ) -> Result<Option<String>, VcsError> {
        // `read-tree -m` trusts the index's stat data; refresh it so clean files are not
        // mistaken for modified ones. Exit 1 only means some entries needed refreshing.
        self.git(checkout, ["update-index", "-q", "--refresh"])
            .await?;
        let args = ["read-tree", "-m", "-u", old, new];
        let out = self.git(checkout, args).await?;
        if !out.success() {
            let stderr = out.stderr_text();
            if stderr.contains("would be overwritten") || stderr.contains("not uptodate") {
                return Ok(Some(format!(
                    "merging {} into {} would overwrite files in {}, where {} is checked out: \
                     {stderr}; move them away, then merge again (`loopctl merge {}`); nothing \
                     was merged, the run branch is kept",
                    req.run_branch,
                    req.target_branch,
                    checkout.display(),
                    req.target_branch,
                    req.run_id
                )));
            }
            return Err(failed(checkout, &os_args(args), &out));
        }
        if let Err(e) = self.compare_and_swap(req, Some(old), new).await {
            // The ref did not move, so the checkout must go back to where the ref still is.
            self.run(checkout, ["read-tree", "-m", "-u", new, old])
                .await?;
            return Err(e);
        }
        Ok(None)
    }

    /// The worktree that has `target_ref` checked out, and whether it is the primary one.
    async fn checkout_of(
        &self,
        repo: &Path,
        target_ref: &str,
    ) -> Result<Option<(PathBuf, bool)>, VcsError> {
        let entries = self.worktrees(repo).await?;
        Ok(entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.branch.as_deref() == Some(target_ref) && !e.prunable)
            .map(|(i, e)| (e.path.clone(), i == 0)))
    }

    pub(super) async fn merge(&self, req: &MergeRequest) -> Result<MergeOutcome, VcsError> {
        let repo = req.repo.as_path();
        if req.strategy == MergeStrategy::None {
            return Err(VcsError::Fatal {
                detail: format!(
                    "merge strategy `none` asks for no merge of the run branch {}",
                    req.run_branch
                ),
            });
        }
        self.check_branch_name(repo, &req.target_branch).await?;
        if req.target_branch == req.run_branch {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the run branch {} is also the merge target; choose another target",
                    req.run_branch
                ),
            });
        }

        let target_ref = format!("refs/heads/{}", req.target_branch);
        let old_target = self.branch_tip(repo, &req.target_branch).await?;
        let run_tip = self.branch_tip(repo, &req.run_branch).await?;
        if let Some(old) = &old_target
            && self.find_run_merge(req, run_tip.is_some()).await?.is_some()
        {
            // A repeated call after a crash: the merge stands.
            return Ok(MergeOutcome::AlreadyMerged {
                commit: old.clone(),
            });
        }
        let Some(run_tip) = run_tip else {
            return Err(VcsError::NotFound {
                what: format!("run branch `{}`", req.run_branch),
            });
        };
        let start = match &old_target {
            Some(sha) => sha.clone(),
            None => self
                .resolve(repo, &req.base_branch, "commit")
                .await?
                .ok_or_else(|| VcsError::NotFound {
                    what: format!("base branch `{}`", req.base_branch),
                })?,
        };
        if self.is_ancestor(repo, &run_tip, &start).await? {
            return Ok(MergeOutcome::NothingToMerge);
        }

        let merge_tree = [
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            &start,
            &run_tip,
        ];
        let out = self.git(repo, merge_tree).await?;
        let stdout = out.stdout_text();
        let mut lines = stdout.lines();
        let tree = match out.code {
            0 => lines.next().unwrap_or_default().to_owned(),
            1 => {
                let mut files: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
                files.dedup();
                return Err(VcsError::MergeConflict {
                    paths: files.iter().map(|f| (*f).to_owned()).collect(),
                    detail: format!(
                        "merging {} into {} conflicts in {}; nothing was merged, the run \
                         branch {} is kept",
                        req.run_branch,
                        req.target_branch,
                        files.join(", "),
                        req.run_branch
                    ),
                });
            }
            _ if out.stderr_text().contains("unrelated histories") => {
                return Err(VcsError::Conflict {
                    detail: format!(
                        "the run branch {} and {} share no history; nothing was merged",
                        req.run_branch, req.target_branch
                    ),
                });
            }
            _ => return Err(failed(repo, &os_args(merge_tree), &out)),
        };
        if tree.is_empty() {
            return Err(failed(repo, &os_args(merge_tree), &out));
        }
        if self.resolve(repo, &start, "tree").await?.as_deref() == Some(tree.as_str()) {
            return Ok(MergeOutcome::NothingToMerge);
        }

        // Only a checkout that has the target itself checked out is ever touched.
        let checkout = match &old_target {
            Some(_) => self.checkout_of(repo, &target_ref).await?,
            None => None,
        };
        if let Some((dir, primary)) = &checkout
            && let Some(reason) = self.checkout_blocks(req, dir, *primary).await?
        {
            return Ok(MergeOutcome::Pending { reason });
        }

        let message = format!(
            "{}\n\n{RUN_ID_TRAILER}: {}\nLoop-Run-Branch: {}\n",
            req.message.trim_end(),
            req.run_id,
            req.run_branch
        );
        let mut commit_tree = vec!["commit-tree", tree.as_str(), "-p", start.as_str()];
        if req.strategy == MergeStrategy::Merge {
            commit_tree.extend(["-p", run_tip.as_str()]);
        }
        commit_tree.extend(["-m", message.as_str()]);
        let new = self.text(repo, commit_tree).await?;

        match (&old_target, checkout) {
            (Some(old), Some((dir, _))) => {
                if let Some(reason) = self
                    .advance_checked_out_target(req, &dir, old, &new)
                    .await?
                {
                    return Ok(MergeOutcome::Pending { reason });
                }
                Ok(MergeOutcome::Merged {
                    commit: new,
                    checkout: Some(dir),
                })
            }
            _ => {
                self.compare_and_swap(req, old_target.as_deref(), &new)
                    .await?;
                Ok(MergeOutcome::Merged {
                    commit: new,
                    checkout: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::git_cli::plumbing::normalize;
    use crate::impls::git_cli::test_support::*;
    use crate::testing::GitFixture;

    #[tokio::test]
    async fn squash_creates_the_target_and_leaves_the_checkout_alone() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        let wt = fx.root().join("repo.run-a");
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        for (file, text) in [("one.txt", "1\n"), ("two.txt", "2\n")] {
            std::fs::write(wt.join(file), text).unwrap();
            vcs.commit_paths(&wt, &[PathBuf::from(file)], &format!("task {file}"))
                .await
                .unwrap();
        }
        let run_tip = fx.git(["rev-parse", "run/a"]);
        let main_tip = fx.head();

        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Merged { commit, checkout } = outcome else {
            panic!("expected Merged, got {outcome:?}");
        };
        assert_eq!(checkout, None);
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), commit);
        assert_eq!(
            fx.log_subjects("agent/demo"),
            ["loop: demo (2 tasks)", "initial commit"]
        );
        let parents = fx.git(["rev-list", "--parents", "-n", "1", "agent/demo"]);
        assert_eq!(parents, format!("{commit} {main_tip}"));
        let body = fx.git(["log", "-1", "--format=%B", "agent/demo"]);
        assert!(
            body.contains(&format!("{RUN_ID_TRAILER}: {}", req.run_id)),
            "{body}"
        );
        // The user's checkout stays on its branch, untouched.
        assert_eq!(current_branch(&fx), "main");
        assert!(!fx.path().join("two.txt").exists());
        assert!(vcs.is_clean(fx.path()).await.unwrap());
        // The run branch and the base are untouched.
        assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);

        // A repeated call (e.g. after a crash) merges nothing twice.
        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), commit);
        assert_eq!(fx.log_subjects("agent/demo").len(), 2);
    }

    #[tokio::test]
    async fn a_repeated_merge_is_recognised_and_checks_nothing_out() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let MergeOutcome::Merged { commit, .. } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(current_branch(&fx), "main");

        // Still recognised once the run branch is gone.
        fx.git(["branch", "-D", "run/a"]);
        let gone = vcs.merge(&req).await.unwrap();
        assert_eq!(gone, MergeOutcome::AlreadyMerged { commit });
    }

    #[tokio::test]
    async fn the_target_ref_moves_only_from_the_expected_commit() {
        let fx = GitFixture::new();
        let first = fx.head();
        let second = fx.commit_file("a.txt", "a\n", "second");
        fx.branch("agent/demo");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let detail = conflict_detail(vcs.compare_and_swap(&req, Some(&first), &first).await);
        assert!(detail.contains("changed while"), "{detail}");
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), second);
        // `None` means the ref must not exist yet.
        assert!(vcs.compare_and_swap(&req, None, &first).await.is_err());
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), second);
        vcs.compare_and_swap(&req, Some(&second), &first)
            .await
            .unwrap();
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), first);
    }

    #[tokio::test]
    async fn merge_strategy_makes_a_merge_commit_with_two_parents() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("one.txt", "1\n"), ("two.txt", "2\n")]);
        // The target has moved on since the run started, so this is a real merge.
        let target_tip = fx.commit_file("other.txt", "o\n", "meanwhile on main");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "main", MergeStrategy::Merge);
        let MergeOutcome::Merged { commit, checkout } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        // `main` is checked out and clean: it moved along.
        assert_eq!(checkout.map(|c| normalize(&c)), Some(normalize(fx.path())));
        let parents = fx.git(["rev-list", "--parents", "-n", "1", "main"]);
        assert_eq!(parents, format!("{commit} {target_tip} {run_tip}"));
        assert_eq!(fx.head(), commit);
        assert_eq!(fx.file_at("main", "one.txt").as_deref(), Some("1\n"));
        assert_eq!(fx.file_at("main", "other.txt").as_deref(), Some("o\n"));
        assert!(fx.path().join("two.txt").is_file());
        assert!(vcs.is_clean(fx.path()).await.unwrap());

        let again = vcs.merge(&req).await.unwrap();
        assert_eq!(
            again,
            MergeOutcome::AlreadyMerged {
                commit: commit.clone()
            }
        );
        assert_eq!(fx.head(), commit);
    }

    #[tokio::test]
    async fn a_conflict_changes_nothing() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("README.md", "run version\n")]);
        let main_tip = fx.commit_file("README.md", "main version\n", "edit readme on main");
        let vcs = cli(&fx);

        for target in ["main", "agent/new"] {
            let req = request(&fx, "run/a", target, MergeStrategy::Squash);
            let detail = conflict_detail(vcs.merge(&req).await);
            assert!(detail.contains("README.md"), "{detail}");
            assert!(detail.contains("run/a is kept"), "{detail}");
            assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
            assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
            assert_eq!(current_branch(&fx), "main");
            assert!(vcs.is_clean(fx.path()).await.unwrap());
            assert_eq!(
                std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
                "main version\n"
            );
        }
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"agent/new".to_owned())
        );
    }

    #[tokio::test]
    async fn a_dirty_checkout_on_another_branch_does_not_stop_the_merge() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let main_tip = fx.head();
        fx.write_file("README.md", "work in progress\n");
        fx.write_file("scratch.txt", "untracked\n");
        let status_before = fx.git(["status", "--porcelain=v1", "--untracked-files=all"]);
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Merged { commit, checkout } = outcome else {
            panic!("expected Merged, got {outcome:?}");
        };
        assert_eq!(checkout, None);
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), commit);
        assert_eq!(fx.file_at("agent/demo", "one.txt").as_deref(), Some("1\n"));
        // The checkout is exactly as it was: branch, HEAD, index, files.
        assert_eq!(current_branch(&fx), "main");
        assert_eq!(fx.head(), main_tip);
        assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
        assert_eq!(
            fx.git(["status", "--porcelain=v1", "--untracked-files=all"]),
            status_before
        );
        assert_eq!(
            std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
            "work in progress\n"
        );
    }

    #[tokio::test]
    async fn a_dirty_checked_out_target_makes_the_merge_pending_and_loses_nothing() {
        let fx = GitFixture::new();
        let run_tip = run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let main_tip = fx.head();
        fx.write_file("README.md", "work in progress\n");
        fx.git(["add", "README.md"]);
        fx.write_file("README.md", "more work\n");
        let status_before = fx.git(["status", "--porcelain=v1", "--untracked-files=all"]);
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "main", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Pending { reason } = outcome else {
            panic!("expected Pending, got {outcome:?}");
        };
        assert!(reason.contains("uncommitted changes"), "{reason}");
        assert!(reason.contains("README.md"), "{reason}");
        assert!(reason.contains("loopctl merge"), "{reason}");
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
        assert_eq!(fx.git(["rev-parse", "run/a"]), run_tip);
        assert_eq!(
            fx.git(["status", "--porcelain=v1", "--untracked-files=all"]),
            status_before
        );
        assert_eq!(
            std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
            "more work\n"
        );

        // Once the user put the work aside, the same call lands the merge.
        fx.git(["stash", "push", "-q"]);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Merged { commit, checkout } = outcome else {
            panic!("expected Merged, got {outcome:?}");
        };
        assert!(checkout.is_some());
        assert_eq!(fx.head(), commit);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("one.txt")).unwrap(),
            "1\n"
        );
        fx.git(["stash", "pop", "-q"]);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("README.md")).unwrap(),
            "more work\n"
        );
    }

    #[tokio::test]
    async fn nothing_to_merge() {
        let fx = GitFixture::new();
        fx.branch("run/empty");
        let vcs = cli(&fx);
        let req = request(&fx, "run/empty", "agent/demo", MergeStrategy::Squash);
        assert_eq!(vcs.merge(&req).await.unwrap(), MergeOutcome::NothingToMerge);
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"agent/demo".to_owned())
        );

        // Work whose changes the target already holds is nothing to merge either.
        run_branch(&fx, "run/same", &[("same.txt", "s\n")]);
        fx.commit_file("same.txt", "s\n", "same change on main");
        let req = request(&fx, "run/same", "main", MergeStrategy::Squash);
        let before = fx.head();
        assert_eq!(vcs.merge(&req).await.unwrap(), MergeOutcome::NothingToMerge);
        assert_eq!(fx.head(), before);
    }

    #[tokio::test]
    async fn a_missing_run_branch_is_not_found() {
        let fx = GitFixture::new();
        let req = request(&fx, "run/gone", "agent/demo", MergeStrategy::Squash);
        let result = cli(&fx).merge(&req).await;
        assert!(
            matches!(result, Err(VcsError::NotFound { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_checked_out_target_is_updated_and_untracked_files_survive() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        fx.git(["checkout", "-q", "-b", "agent/demo"]);
        fx.write_file("notes/untracked.txt", "keep me\n");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let MergeOutcome::Merged { commit, checkout } = vcs.merge(&req).await.unwrap() else {
            panic!("expected a merge");
        };
        assert!(checkout.is_some());
        assert_eq!(current_branch(&fx), "agent/demo");
        assert_eq!(fx.head(), commit);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("one.txt")).unwrap(),
            "1\n"
        );
        assert_eq!(
            std::fs::read_to_string(fx.path().join("notes/untracked.txt")).unwrap(),
            "keep me\n"
        );
        assert_eq!(
            fx.git(["status", "--porcelain=v1", "--untracked-files=all"]),
            "?? notes/untracked.txt"
        );
    }

    #[tokio::test]
    async fn an_untracked_file_in_the_way_makes_the_merge_pending() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        let main_tip = fx.head();
        fx.write_file("one.txt", "my own\n");
        let vcs = cli(&fx);
        let req = request(&fx, "run/a", "main", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Pending { reason } = outcome else {
            panic!("expected Pending, got {outcome:?}");
        };
        assert!(reason.contains("one.txt"), "{reason}");
        assert_eq!(fx.git(["rev-parse", "main"]), main_tip);
        assert_eq!(
            std::fs::read_to_string(fx.path().join("one.txt")).unwrap(),
            "my own\n"
        );
        assert_eq!(fx.git(["status", "--porcelain=v1"]), "?? one.txt");
    }

    #[tokio::test]
    async fn a_target_checked_out_in_another_worktree_makes_the_merge_pending() {
        let fx = GitFixture::new();
        run_branch(&fx, "run/a", &[("one.txt", "1\n")]);
        fx.branch("agent/demo");
        let vcs = cli(&fx);
        let wt = fx.root().join("elsewhere");
        vcs.prepare_worktree(fx.path(), &wt, "agent/demo", "main")
            .await
            .unwrap();
        let before = fx.git(["rev-parse", "agent/demo"]);
        let req = request(&fx, "run/a", "agent/demo", MergeStrategy::Squash);
        let outcome = vcs.merge(&req).await.unwrap();
        let MergeOutcome::Pending { reason } = outcome else {
            panic!("expected Pending, got {outcome:?}");
        };
        assert!(reason.contains("elsewhere"), "{reason}");
        assert_eq!(fx.git(["rev-parse", "agent/demo"]), before);
    }
}
