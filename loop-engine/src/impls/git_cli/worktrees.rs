//! Worktrees of [`GitCli`]: listing, preparing a run's worktree, cleanliness, stashing and
//! the stale locks a killed git leaves behind.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plumbing::{GitCli, existing_dir, failed, os_args, path_from_stdout, same_path};
use crate::backend::{VcsError, WorktreeReport};
use crate::impls::git_refs::RefFiles;

/// One entry of `git worktree list --porcelain`.
#[derive(Debug)]
pub(super) struct WorktreeEntry {
    pub(super) path: PathBuf,
    /// The full ref checked out there (`refs/heads/x`); `None` when detached or bare.
    pub(super) branch: Option<String>,
    /// Registered, but its directory is gone.
    pub(super) prunable: bool,
}

impl GitCli {
    /// The primary checkout of the repository containing `path` (for a linked worktree: the
    /// checkout it was created from; for a bare repository: the repository directory).
    pub async fn common_root(&self, path: &Path) -> Result<PathBuf, VcsError> {
        let dir = existing_dir(path);
        self.worktrees(&dir)
            .await?
            .into_iter()
            .next()
            .map(|entry| entry.path)
            .ok_or_else(|| VcsError::Fatal {
                detail: format!("git lists no worktree for {}", path.display()),
            })
    }

    pub(super) async fn worktrees(&self, dir: &Path) -> Result<Vec<WorktreeEntry>, VcsError> {
        let args = ["worktree", "list", "--porcelain", "-z"];
        let mut attempt = 0;
        loop {
            let out = self.git(dir, args).await?;
            if out.success() {
                return Ok(parse_worktrees(&out.stdout));
            }
            // `git worktree add` running elsewhere (a user, another tool) writes its entry in
            // several steps; a listing that catches it half-written fails with "failed to
            // read .../worktrees/<name>/...". A moment later the entry is whole.
            attempt += 1;
            if attempt >= 5 || !out.stderr_text().contains("/worktrees/") {
                return Err(failed(dir, &os_args(args), &out));
            }
            tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
        }
    }

    /// Removes the `index.lock` of the worktree at `dir`, returning its path if there was one.
    pub(super) async fn remove_index_lock(&self, dir: &Path) -> Result<Option<PathBuf>, VcsError> {
        let out = self.run(dir, ["rev-parse", "--absolute-git-dir"]).await?;
        let git_dir = path_from_stdout(&out.stdout);
        let mut locks = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
        // A git killed mid-commit also leaves the lock of the branch it was moving. Only this
        // worktree's own branch is touched: other worktrees' git may be working right now.
        let branch = self.git(dir, ["symbolic-ref", "-q", "HEAD"]).await?;
        if branch.success() {
            let common = self
                .run(
                    dir,
                    ["rev-parse", "--path-format=absolute", "--git-common-dir"],
                )
                .await?;
            let common = path_from_stdout(&common.stdout);
            let name = branch.stdout_text();
            if name.starts_with("refs/heads/") && !name.contains("..") {
                locks.push(common.join(format!("{name}.lock")));
            }
        }
        let mut removed = None;
        for lock in locks {
            match tokio::fs::remove_file(&lock).await {
                Ok(()) => removed = Some(lock),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VcsError::Fatal {
                        detail: format!("cannot remove stale lock {}: {e}", lock.display()),
                    });
                }
            }
        }
        Ok(removed)
    }

    pub(super) async fn prepare_worktree(
        &self,
        repo: &Path,
        path: &Path,
        branch: &str,
        base: &str,
    ) -> Result<WorktreeReport, VcsError> {
        self.check_branch_name(repo, branch).await?;
        let path = if path.is_absolute() {
            path.to_owned()
        } else {
            repo.join(path)
        };
        let branch_ref = format!("refs/heads/{branch}");
        let mut report = WorktreeReport::default();

        let mut entries = self.worktrees(repo).await?;
        let stale: Vec<PathBuf> = entries
            .iter()
            .filter(|e| e.prunable)
            .map(|e| e.path.clone())
            .collect();
        if !stale.is_empty() {
            self.run(repo, ["worktree", "prune"]).await?;
            report.cleaned.extend(
                stale
                    .iter()
                    .map(|p| format!("pruned the stale worktree registration {}", p.display())),
            );
            entries = self.worktrees(repo).await?;
        }

        if let Some(entry) = entries.iter().find(|e| same_path(&e.path, &path)) {
            if !path.exists() {
                return Err(VcsError::Conflict {
                    detail: format!(
                        "{} is registered as a locked worktree but its directory is missing; \
                         run `git worktree unlock` and `git worktree prune` in {}",
                        path.display(),
                        repo.display()
                    ),
                });
            }
            if entry.branch.as_deref() == Some(branch_ref.as_str()) {
                // The engine prepares a worktree before any agent runs in it, so a lock file
                // found now was left by a process that is gone.
                if let Some(lock) = self.remove_index_lock(&path).await? {
                    report
                        .cleaned
                        .push(format!("removed the stale lock {}", lock.display()));
                }
                return Ok(report);
            }
            let holds = entry
                .branch
                .as_deref()
                .and_then(|r| r.strip_prefix("refs/heads/"))
                .map_or_else(|| "a detached HEAD".to_owned(), |b| format!("branch {b}"));
            return Err(VcsError::Conflict {
                detail: format!(
                    "{} is already a worktree of {holds}, not of {branch}; choose another \
                     worktree path or remove it with `git worktree remove`",
                    path.display()
                ),
            });
        }
        if let Some(other) = entries
            .iter()
            .find(|e| e.branch.as_deref() == Some(branch_ref.as_str()))
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the branch {branch} is already checked out in {}; git allows a branch in \
                     one worktree only",
                    other.path.display()
                ),
            });
        }
        if path.symlink_metadata().is_ok() && !is_empty_dir(&path) {
            return Err(VcsError::Conflict {
                detail: format!(
                    "{} already exists and is not a worktree of {branch}; move it away or \
                     choose another worktree path",
                    path.display()
                ),
            });
        }

        if self.branch_tip(repo, branch).await?.is_none() {
            let from_files = RefFiles::locate(repo).and_then(|f| f.branch_by_name(base));
            let start = match from_files {
                Some(id) => Some(id),
                None => self.resolve(repo, base, "commit").await?,
            };
            let Some(start) = start else {
                let any_commit = self
                    .text(repo, ["rev-list", "--max-count=1", "--all"])
                    .await?;
                if any_commit.is_empty() {
                    return Err(VcsError::Conflict {
                        detail: format!(
                            "the repository {} has no commits yet; make an initial commit so \
                             the run branch {branch} can start from it",
                            repo.display()
                        ),
                    });
                }
                return Err(VcsError::NotFound {
                    what: format!("base branch `{base}`"),
                });
            };
            self.run(repo, ["branch", "--no-track", branch, &start])
                .await?;
            report.created_branch = true;
        }

        let mut add: Vec<OsString> = os_args(["worktree", "add", "--quiet", "--"]);
        add.push(path.clone().into_os_string());
        add.push(branch.into());
        self.run(repo, &add).await?;
        report.created_worktree = true;
        Ok(report)
    }

    pub(super) async fn is_clean(&self, dir: &Path) -> Result<bool, VcsError> {
        // No optional locks: an agent may be running git in the same worktree.
        let status = self
            .text(
                dir,
                [
                    "--no-optional-locks",
                    "status",
                    "--porcelain=v1",
                    "--untracked-files=all",
                ],
            )
            .await?;
        Ok(status.is_empty())
    }

    pub(super) async fn stash_changes(&self, dir: &Path, message: &str) -> Result<bool, VcsError> {
        if self.is_clean(dir).await? {
            return Ok(false);
        }
        self.run(
            dir,
            [
                "stash",
                "push",
                "--include-untracked",
                "--quiet",
                "-m",
                message,
            ],
        )
        .await?;
        Ok(true)
    }

    pub(super) async fn remove_stale_lock(&self, dir: &Path) -> Result<bool, VcsError> {
        Ok(self.remove_index_lock(dir).await?.is_some())
    }
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// Parses `git worktree list --porcelain -z`: attributes end with NUL, entries with an empty
/// attribute.
fn parse_worktrees(stdout: &[u8]) -> Vec<WorktreeEntry> {
    let mut entries = Vec::new();
    let mut current: Option<WorktreeEntry> = None;
    for field in stdout.split(|b| *b == 0) {
        if let Some(path) = field.strip_prefix(b"worktree ") {
            entries.extend(current.take());
            current = Some(WorktreeEntry {
                path: PathBuf::from(OsStr::from_bytes(path)),
                branch: None,
                prunable: false,
            });
        } else if let Some(entry) = current.as_mut() {
            if let Some(branch) = field.strip_prefix(b"branch ") {
                entry.branch = Some(String::from_utf8_lossy(branch).into_owned());
            } else if field == b"prunable" || field.starts_with(b"prunable ") {
                entry.prunable = true;
            } else if field.is_empty() {
                entries.extend(current.take());
            }
        }
    }
    entries.extend(current);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::git_cli::test_support::*;
    use crate::testing::GitFixture;

    #[tokio::test]
    async fn prepare_worktree_creates_branch_and_worktree_beside_the_repo() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(
            report,
            WorktreeReport {
                created_branch: true,
                created_worktree: true,
                cleaned: vec![],
            }
        );
        assert!(!wt.starts_with(fx.path()));
        assert!(wt.join("README.md").is_file());
        assert_eq!(fx.git_in(&wt, ["symbolic-ref", "--short", "HEAD"]), "run/a");
        assert_eq!(fx.git(["rev-parse", "run/a"]), fx.head());
        assert_eq!(current_branch(&fx), "main");

        let again = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(again, WorktreeReport::default());
    }

    #[tokio::test]
    async fn prepare_worktree_uses_an_existing_branch_and_a_relative_path() {
        let fx = GitFixture::new();
        let tip = run_branch(&fx, "run/b", &[("b.txt", "b\n")]);
        let report = cli(&fx)
            .prepare_worktree(fx.path(), Path::new("../repo.run-b"), "run/b", "main")
            .await
            .unwrap();
        assert!(!report.created_branch);
        assert!(report.created_worktree);
        let wt = fx.root().join("repo.run-b");
        assert_eq!(fx.git_in(&wt, ["rev-parse", "HEAD"]), tip);
        assert!(wt.join("b.txt").is_file());
    }

    #[tokio::test]
    async fn prepare_worktree_removes_a_stale_index_lock() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let git_dir = PathBuf::from(fx.git_in(&wt, ["rev-parse", "--absolute-git-dir"]));
        let lock = git_dir.join("index.lock");
        std::fs::write(&lock, "").unwrap();

        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert!(!lock.exists());
        assert!(!report.created_worktree && !report.created_branch);
        assert_eq!(report.cleaned.len(), 1, "{report:?}");
        assert!(report.cleaned[0].contains("index.lock"), "{report:?}");

        std::fs::write(&lock, "").unwrap();
        assert!(vcs.remove_stale_lock(&wt).await.unwrap());
        assert!(!lock.exists());
        assert!(!vcs.remove_stale_lock(&wt).await.unwrap());
    }

    #[tokio::test]
    async fn prepare_worktree_prunes_a_deleted_worktree_and_adds_it_again() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        std::fs::remove_dir_all(&wt).unwrap();

        let report = vcs
            .prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert!(report.created_worktree);
        assert!(!report.created_branch);
        assert_eq!(report.cleaned.len(), 1, "{report:?}");
        assert!(report.cleaned[0].contains("pruned"), "{report:?}");
        assert!(report.cleaned[0].contains("repo.run-a"), "{report:?}");
        assert!(wt.join("README.md").is_file());
    }

    #[tokio::test]
    async fn prepare_worktree_refuses_an_occupied_path() {
        let fx = GitFixture::new();
        let occupied = fx.root().join("occupied");
        std::fs::create_dir(&occupied).unwrap();
        std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
        let vcs = cli(&fx);
        let detail = conflict_detail(
            vcs.prepare_worktree(fx.path(), &occupied, "run/a", "main")
                .await,
        );
        assert!(detail.contains(&occupied.display().to_string()), "{detail}");
        assert_eq!(
            std::fs::read_to_string(occupied.join("notes.txt")).unwrap(),
            "mine"
        );
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"run/a".to_owned())
        );
    }

    #[tokio::test]
    async fn prepare_worktree_refuses_a_worktree_of_another_branch() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let detail = conflict_detail(vcs.prepare_worktree(fx.path(), &wt, "run/b", "main").await);
        assert!(detail.contains("run/a"), "{detail}");
        // The primary checkout holds `main`, so no second worktree may take it.
        let other = fx.root().join("repo.main");
        let detail = conflict_detail(
            vcs.prepare_worktree(fx.path(), &other, "main", "main")
                .await,
        );
        assert!(detail.contains("already checked out"), "{detail}");
    }

    #[tokio::test]
    async fn prepare_worktree_reports_a_missing_base_and_an_empty_repo() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        let missing = vcs
            .prepare_worktree(fx.path(), &fx.root().join("wt"), "run/a", "nope")
            .await;
        match missing {
            Err(VcsError::NotFound { what }) => assert!(what.contains("nope"), "{what}"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        let invalid = vcs
            .prepare_worktree(fx.path(), &fx.root().join("wt"), "bad..name", "main")
            .await;
        assert!(conflict_detail(invalid).contains("bad..name"));

        fx.git_in(fx.root(), ["init", "-q", "-b", "main", "empty"]);
        let empty = fx.root().join("empty");
        let detail = conflict_detail(
            vcs.prepare_worktree(&empty, &fx.root().join("wt"), "run/a", "main")
                .await,
        );
        assert!(detail.contains("no commits"), "{detail}");
    }
    #[test]
    fn parses_porcelain_worktree_lists() {
        let raw = b"worktree /r\0HEAD abc\0branch refs/heads/main\0\0worktree /w\0HEAD def\0detached\0prunable gitdir file points to non-existent location\0\0";
        let entries = parse_worktrees(raw);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, Path::new("/r"));
        assert_eq!(entries[0].branch.as_deref(), Some("refs/heads/main"));
        assert!(!entries[0].prunable);
        assert_eq!(entries[1].branch, None);
        assert!(entries[1].prunable);
    }
}
