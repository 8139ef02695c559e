//! Refs and commits of [`GitCli`]: branch tips, HEAD, ancestry, branch names, the default
//! branch, file contents at a revision and the engine's own commits. The files under `.git`
//! answer the frequent questions without a process (see `git_refs`); git answers the rest.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::plumbing::{FALLBACK_IDENTITY, GitCli, existing_dir, failed, os_args, path_from_stdout};
use crate::backend::VcsError;
use crate::impls::git_refs::{HeadFile, RefFiles, plainly_valid_branch_name};

impl GitCli {
    pub(super) async fn branch_tip(
        &self,
        dir: &Path,
        branch: &str,
    ) -> Result<Option<String>, VcsError> {
        let full = format!("refs/heads/{branch}");
        if let Some(tip) = RefFiles::locate(dir).and_then(|f| f.branch_tip(&full)) {
            return Ok(tip);
        }
        self.resolve(dir, &format!("refs/heads/{branch}"), "commit")
            .await
    }

    /// The full ref HEAD points to in `dir`; `None` when detached.
    pub(super) async fn current_ref(&self, dir: &Path) -> Result<Option<String>, VcsError> {
        // The files answer in microseconds; git only when they cannot tell.
        if let Some(head) = RefFiles::locate(dir).and_then(|f| f.head_file()) {
            return Ok(match head {
                HeadFile::Symbolic(r) => Some(r),
                HeadFile::Detached(_) => None,
            });
        }
        let out = self.git(dir, ["symbolic-ref", "--quiet", "HEAD"]).await?;
        match out.code {
            0 => Ok(Some(out.stdout_text())),
            1 => Ok(None),
            _ => Err(failed(
                dir,
                &os_args(["symbolic-ref", "--quiet", "HEAD"]),
                &out,
            )),
        }
    }

    pub(super) async fn is_ancestor(
        &self,
        dir: &Path,
        ancestor: &str,
        of: &str,
    ) -> Result<bool, VcsError> {
        let args = ["merge-base", "--is-ancestor", ancestor, of];
        let out = self.git(dir, args).await?;
        match out.code {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(failed(dir, &os_args(args), &out)),
        }
    }

    /// True when `since` is an ancestor of `head` on `full_ref`: read from the branch's reflog
    /// when it shows plain commits (the usual case after an agent step), else asked of git.
    pub(super) async fn moved_forward(
        &self,
        dir: &Path,
        full_ref: &str,
        since: &str,
        head: &str,
    ) -> Result<bool, VcsError> {
        let from_reflog =
            RefFiles::locate(dir).and_then(|f| f.moved_forward_by_commits(full_ref, since, head));
        match from_reflog {
            Some(forward) => Ok(forward),
            None => self.is_ancestor(dir, since, head).await,
        }
    }

    /// Rejects names git would not accept as a branch, or would read as an option.
    pub(super) async fn check_branch_name(&self, dir: &Path, name: &str) -> Result<(), VcsError> {
        let invalid = || VcsError::Conflict {
            detail: format!("`{name}` is not a valid git branch name"),
        };
        if name.is_empty() || name.starts_with('-') {
            return Err(invalid());
        }
        // git's rules, checked in place; only an unusual name costs a git process.
        if plainly_valid_branch_name(name) {
            return Ok(());
        }
        let out = self
            .git(dir, ["check-ref-format", "--branch", name])
            .await?;
        // `--branch` expands shorthands such as `@{-1}`; only a name that stays itself is a name.
        if out.success() && out.stdout_text() == name {
            Ok(())
        } else {
            Err(invalid())
        }
    }

    pub(super) async fn repo_root(&self, path: &Path) -> Result<PathBuf, VcsError> {
        // The top of a checkout holds its `.git`: no process needed to say so.
        if RefFiles::locate(path).and_then(|f| f.head_file()).is_some()
            && let Ok(real) = std::fs::canonicalize(path)
        {
            return Ok(real);
        }
        let out = self
            .run(&existing_dir(path), ["rev-parse", "--show-toplevel"])
            .await?;
        Ok(path_from_stdout(&out.stdout))
    }

    pub(super) async fn default_branch(&self, repo: &Path) -> Result<String, VcsError> {
        if let Some(name) = RefFiles::locate(repo).and_then(|f| f.default_branch()) {
            return Ok(name);
        }
        let remote_head = self
            .git(
                repo,
                [
                    "symbolic-ref",
                    "--quiet",
                    "--short",
                    "refs/remotes/origin/HEAD",
                ],
            )
            .await?;
        if remote_head.success() {
            let name = remote_head.stdout_text();
            let name = name.strip_prefix("origin/").unwrap_or(&name);
            if !name.is_empty() {
                return Ok(name.to_owned());
            }
        }
        let primary = self.common_root(repo).await?;
        if let Some(current) = self.current_ref(&primary).await?
            && let Some(name) = current.strip_prefix("refs/heads/")
        {
            return Ok(name.to_owned());
        }
        let configured = self
            .git(repo, ["config", "--get", "init.defaultBranch"])
            .await?;
        if configured.success() && !configured.stdout_text().is_empty() {
            return Ok(configured.stdout_text());
        }
        Ok("main".to_owned())
    }

    pub(super) async fn list_branches(&self, repo: &Path) -> Result<Vec<String>, VcsError> {
        if let Some(names) = RefFiles::locate(repo).and_then(|f| f.branches()) {
            return Ok(names);
        }
        // Full ref names, stripped here: `refname:short` turns a branch into `heads/x` when a
        // tag of the same name exists.
        let text = self
            .text(repo, ["for-each-ref", "--format=%(refname)", "refs/heads"])
            .await?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix("refs/heads/"))
            .map(str::to_owned)
            .collect())
    }

    pub(super) async fn head(&self, dir: &Path) -> Result<Option<String>, VcsError> {
        // Read between every two agent calls: the files answer without a process.
        if let Some(id) = RefFiles::locate(dir).and_then(|f| f.head_commit()) {
            return Ok(Some(id));
        }
        let args = ["rev-parse", "--verify", "--quiet", "HEAD"];
        let out = self.git(dir, args).await?;
        match out.code {
            0 => Ok(Some(out.stdout_text())),
            1 => Ok(None),
            _ => Err(failed(dir, &os_args(args), &out)),
        }
    }

    pub(super) async fn check_branch(
        &self,
        dir: &Path,
        branch: &str,
        since: Option<String>,
    ) -> Result<(), VcsError> {
        let expected = format!("refs/heads/{branch}");
        let current = self.current_ref(dir).await?;
        if current.as_deref() != Some(expected.as_str()) {
            let now = current
                .as_deref()
                .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r).to_owned())
                .unwrap_or_else(|| "a detached HEAD".to_owned());
            return Err(VcsError::Conflict {
                detail: format!(
                    "the worktree {} has {now} checked out instead of the run branch {branch}; \
                     work committed there is not part of the run",
                    dir.display()
                ),
            });
        }
        if let Some(since) = since
            && let Some(head) = self.head(dir).await?
            && !self.moved_forward(dir, &expected, &since, &head).await?
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the history of the run branch {branch} was rewritten: {since} is no longer \
                     an ancestor of its head {head}; the lost commits are still in the reflog"
                ),
            });
        }
        Ok(())
    }

    pub(super) async fn show_file(
        &self,
        repo: &Path,
        rev: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, VcsError> {
        if self.resolve(repo, rev, "tree").await?.is_none() {
            return Err(VcsError::NotFound {
                what: format!("revision `{rev}`"),
            });
        }
        let mut spec = OsString::from(format!("{rev}:"));
        spec.push(path.as_os_str());
        let kind = self
            .git(repo, [OsStr::new("cat-file"), OsStr::new("-t"), &spec])
            .await?;
        if !kind.success() || kind.stdout_text() != "blob" {
            return Ok(None);
        }
        let out = self
            .run(repo, [OsStr::new("cat-file"), OsStr::new("blob"), &spec])
            .await?;
        Ok(Some(out.stdout))
    }

    pub(super) async fn commit_paths(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        message: &str,
    ) -> Result<Option<String>, VcsError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let literal = |p: &Path| {
            let mut spec = OsString::from(":(literal)");
            spec.push(p.as_os_str());
            spec
        };
        let (present, absent): (Vec<&PathBuf>, Vec<&PathBuf>) = paths
            .iter()
            .partition(|p| dir.join(p).symlink_metadata().is_ok());
        if !present.is_empty() {
            let mut args = os_args(["add", "--all", "--"]);
            args.extend(present.iter().map(|p| literal(p)));
            self.run(dir, &args).await?;
        }
        if !absent.is_empty() {
            // A named path that is gone is a deletion to commit (or nothing, if never tracked).
            let mut args = os_args(["rm", "--cached", "--quiet", "-r", "--ignore-unmatch", "--"]);
            args.extend(absent.iter().map(|p| literal(p)));
            self.run(dir, &args).await?;
        }

        let mut diff = os_args(["diff", "--cached", "--name-only", "-z", "--"]);
        diff.extend(paths.iter().map(|p| literal(p)));
        let changed = self.run(dir, &diff).await?.stdout;
        let changed: Vec<&[u8]> = changed
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .collect();
        if changed.is_empty() {
            return Ok(None);
        }
        // `--only` with the changed files (named from the top of the tree, as `diff` prints
        // them) leaves anything else the agent may have staged out of this commit.
        let mut commit = os_args([
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            message,
            "--only",
            "--",
        ]);
        commit.extend(changed.iter().map(|name| {
            let mut spec = OsString::from(":(top,literal)");
            spec.push(OsStr::from_bytes(name));
            spec
        }));
        self.run(dir, &commit).await?;
        self.head(dir).await
    }

    /// The engine's fallback identity for each role (author, committer) git cannot name in
    /// `dir` without guessing from the host name: two `git var` calls.
    pub(super) async fn identity_env(&self, dir: &Path) -> Result<Vec<(String, String)>, VcsError> {
        let mut env = Vec::new();
        for (role, prefix) in [
            ("GIT_AUTHOR_IDENT", "GIT_AUTHOR_"),
            ("GIT_COMMITTER_IDENT", "GIT_COMMITTER_"),
        ] {
            let out = self
                .git(
                    &existing_dir(dir),
                    ["-c", "user.useConfigOnly=true", "var", role],
                )
                .await?;
            if !out.success() {
                env.extend(
                    FALLBACK_IDENTITY
                        .iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                );
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::git_cli::plumbing::normalize;
    use crate::impls::git_cli::test_support::*;
    use crate::testing::GitFixture;

    #[tokio::test]
    async fn head_and_branch_checks_read_from_files_agree_with_git() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        let start = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(start, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        assert!(
            RefFiles::locate(&wt).is_some(),
            "the plain layout is read from files"
        );
        // Two agent commits: the reflog shows plain commits, so no git process is needed.
        for n in 0..2 {
            std::fs::write(wt.join(format!("f{n}.txt")), "x").unwrap();
            fx.git_in(&wt, ["add", "-A"]);
            fx.git_in(&wt, ["commit", "-q", "-m", "tick"]);
        }
        let head = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(head, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        let files = RefFiles::locate(&wt).unwrap();
        assert_eq!(
            files.moved_forward_by_commits("refs/heads/run/a", &start, &head),
            Some(true)
        );
        vcs.check_branch(&wt, "run/a", Some(start.clone()))
            .await
            .unwrap();
        // An amend rewrites history: the reflog cannot vouch, git says no.
        fx.git_in(&wt, ["commit", "-q", "--amend", "-m", "tick again"]);
        let detail = conflict_detail(vcs.check_branch(&wt, "run/a", Some(head.clone())).await);
        assert!(detail.contains("was rewritten"), "{detail}");
        // Packed refs are not read from files; git answers and agrees.
        fx.git_in(&wt, ["pack-refs", "--all"]);
        let packed = vcs.head(&wt).await.unwrap().unwrap();
        assert_eq!(packed, fx.git_in(&wt, ["rev-parse", "HEAD"]));
        vcs.check_branch(&wt, "run/a", Some(start.clone()))
            .await
            .unwrap();
        // A detached HEAD is not the run branch.
        fx.git_in(&wt, ["checkout", "-q", "--detach"]);
        let detail = conflict_detail(vcs.check_branch(&wt, "run/a", Some(start)).await);
        assert!(detail.contains("a detached HEAD"), "{detail}");
    }

    #[tokio::test]
    async fn commits_without_an_identity_use_the_engines_and_a_configured_one_wins() {
        let fx = GitFixture::new();
        let env: Vec<(String, String)> = fx
            .env()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_NAME") && !k.ends_with("_EMAIL"))
            .collect();
        let vcs = GitCli::with_env(env);
        let author = || fx.git(["log", "-1", "--format=%an <%ae>"]);
        fx.write_file("plan.md", "- [x] one\n");
        vcs.commit_paths(fx.path(), &[PathBuf::from("plan.md")], "seed")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(author(), "agent-loop <agent-loop@localhost>");
        fx.git(["config", "user.name", "Own Name"]);
        fx.git(["config", "user.email", "own@example.invalid"]);
        fx.write_file("plan.md", "- [x] two\n");
        vcs.commit_paths(fx.path(), &[PathBuf::from("plan.md")], "again")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(author(), "Own Name <own@example.invalid>");
    }

    #[tokio::test]
    async fn identity_env_is_the_fallback_only_where_git_has_no_identity() {
        let fx = GitFixture::new();
        let env: Vec<(String, String)> = fx
            .env()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("_NAME") && !k.ends_with("_EMAIL"))
            .collect();
        let vcs = GitCli::with_env(env);
        let names = |env: Vec<(String, String)>| -> Vec<String> {
            env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        assert_eq!(
            names(vcs.identity_env(fx.path()).await.unwrap()),
            [
                "GIT_AUTHOR_NAME=agent-loop",
                "GIT_AUTHOR_EMAIL=agent-loop@localhost",
                "GIT_COMMITTER_NAME=agent-loop",
                "GIT_COMMITTER_EMAIL=agent-loop@localhost",
            ]
        );
        // A configured identity wins; so does one in the environment.
        fx.git(["config", "user.name", "Own Name"]);
        fx.git(["config", "user.email", "own@example.invalid"]);
        assert!(vcs.identity_env(fx.path()).await.unwrap().is_empty());
        assert!(cli(&fx).identity_env(fx.path()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn default_branch_is_the_checked_out_branch() {
        let fx = GitFixture::new();
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "main");
        fx.git(["branch", "-m", "main", "trunk"]);
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "trunk");
    }

    #[tokio::test]
    async fn default_branch_prefers_the_remote_head() {
        let fx = GitFixture::new();
        fx.git(["update-ref", "refs/remotes/origin/dev", "HEAD"]);
        fx.git([
            "symbolic-ref",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/dev",
        ]);
        assert_eq!(cli(&fx).default_branch(fx.path()).await.unwrap(), "dev");
    }

    #[tokio::test]
    async fn default_branch_of_a_linked_worktree_is_the_primary_branch() {
        let fx = GitFixture::new();
        let wt = fx.root().join("repo.run-a");
        let vcs = cli(&fx);
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        assert_eq!(vcs.default_branch(&wt).await.unwrap(), "main");
        assert_eq!(
            normalize(&vcs.common_root(&wt).await.unwrap()),
            normalize(fx.path())
        );
        assert_eq!(
            normalize(&vcs.repo_root(&wt).await.unwrap()),
            normalize(&wt)
        );
    }

    #[tokio::test]
    async fn default_branch_falls_back_to_config_then_main_when_detached() {
        let fx = GitFixture::new();
        fx.git(["checkout", "-q", "--detach"]);
        let vcs = cli(&fx);
        assert_eq!(vcs.default_branch(fx.path()).await.unwrap(), "main");
        fx.git(["config", "init.defaultBranch", "develop"]);
        assert_eq!(vcs.default_branch(fx.path()).await.unwrap(), "develop");
    }

    #[tokio::test]
    async fn repo_root_of_a_subdirectory_and_outside_a_repo() {
        let fx = GitFixture::new();
        fx.write_file("src/lib.rs", "");
        let vcs = cli(&fx);
        let root = vcs.repo_root(&fx.path().join("src")).await.unwrap();
        assert_eq!(normalize(&root), normalize(fx.path()));
        let outside = vcs.repo_root(fx.root()).await;
        assert!(
            matches!(outside, Err(VcsError::NotFound { .. })),
            "{outside:?}"
        );
    }

    #[tokio::test]
    async fn list_branches_lists_local_branches() {
        let fx = GitFixture::new();
        fx.branch("feature/x");
        fx.branch("zeta");
        // A tag with a branch's name must not change how the branch is listed.
        fx.git(["tag", "zeta"]);
        let branches = cli(&fx).list_branches(fx.path()).await.unwrap();
        assert_eq!(branches, ["feature/x", "main", "zeta"]);
    }
    #[tokio::test]
    async fn head_and_is_clean() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        assert_eq!(vcs.head(fx.path()).await.unwrap(), Some(fx.head()));
        assert!(vcs.is_clean(fx.path()).await.unwrap());
        fx.write_file("new.txt", "untracked\n");
        assert!(!vcs.is_clean(fx.path()).await.unwrap());
        std::fs::remove_file(fx.path().join("new.txt")).unwrap();
        fx.write_file("README.md", "changed\n");
        assert!(!vcs.is_clean(fx.path()).await.unwrap());

        fx.git_in(fx.root(), ["init", "-q", "-b", "main", "empty"]);
        assert_eq!(vcs.head(&fx.root().join("empty")).await.unwrap(), None);
        let outside = vcs.head(fx.root()).await;
        assert!(
            matches!(outside, Err(VcsError::NotFound { .. })),
            "{outside:?}"
        );
    }

    #[tokio::test]
    async fn show_file_reads_committed_contents() {
        let fx = GitFixture::new();
        fx.commit_file("docs/plan.md", "- [ ] one\n", "add plan");
        let vcs = cli(&fx);
        let plan = vcs
            .show_file(fx.path(), "HEAD", Path::new("docs/plan.md"))
            .await
            .unwrap();
        assert_eq!(plan.as_deref(), Some(b"- [ ] one\n".as_slice()));
        let before = vcs
            .show_file(fx.path(), "HEAD~1", Path::new("docs/plan.md"))
            .await
            .unwrap();
        assert_eq!(before, None);
        let dir = vcs
            .show_file(fx.path(), "HEAD", Path::new("docs"))
            .await
            .unwrap();
        assert_eq!(dir, None);
        let bad_rev = vcs
            .show_file(fx.path(), "no-such-rev", Path::new("docs/plan.md"))
            .await;
        assert!(
            matches!(bad_rev, Err(VcsError::NotFound { .. })),
            "{bad_rev:?}"
        );
    }

    #[tokio::test]
    async fn commit_paths_commits_only_the_named_paths() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        fx.write_file("plan.md", "- [x] one\n");
        fx.write_file("scratch.txt", "not mine\n");
        fx.write_file("staged.txt", "staged by someone else\n");
        fx.git(["add", "staged.txt"]);

        let sha = vcs
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "loop: tick plan")
            .await
            .unwrap()
            .expect("a commit");
        assert_eq!(sha, fx.head());
        assert_eq!(
            fx.git(["show", "--name-only", "--format=%s", "HEAD"]),
            "loop: tick plan\n\nplan.md"
        );
        // What else was there is left as it was: still staged, still untracked.
        let status = fx.git(["status", "--porcelain=v1"]);
        assert!(status.contains("A  staged.txt"), "{status}");
        assert!(status.contains("?? scratch.txt"), "{status}");

        let again = vcs
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "loop: tick plan")
            .await
            .unwrap();
        assert_eq!(again, None);
        assert_eq!(fx.head(), sha);
    }

    #[tokio::test]
    async fn commit_paths_commits_deletions_and_ignores_unknown_paths() {
        let fx = GitFixture::new();
        fx.commit_file("old.txt", "old\n", "add old");
        std::fs::remove_file(fx.path().join("old.txt")).unwrap();
        let vcs = cli(&fx);
        let sha = vcs
            .commit_paths(
                fx.path(),
                &[PathBuf::from("old.txt"), PathBuf::from("never-existed.txt")],
                "loop: drop old",
            )
            .await
            .unwrap();
        assert_eq!(sha, Some(fx.head()));
        assert_eq!(fx.file_at("HEAD", "old.txt"), None);
        assert_eq!(fx.file_at("HEAD~1", "old.txt").as_deref(), Some("old\n"));
        assert!(vcs.is_clean(fx.path()).await.unwrap());
    }

    #[tokio::test]
    async fn a_held_index_lock_is_retryable() {
        let fx = GitFixture::new();
        std::fs::write(fx.path().join(".git/index.lock"), "").unwrap();
        fx.write_file("plan.md", "x\n");
        let result = cli(&fx)
            .commit_paths(fx.path(), &[PathBuf::from("plan.md")], "m")
            .await;
        assert!(
            matches!(result, Err(VcsError::Retryable { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn missing_git_is_fatal_with_a_clear_message() {
        let fx = GitFixture::new();
        let mut env = fx.env();
        env.push(("PATH".to_owned(), "/nonexistent-loop-path".to_owned()));
        // `head` may answer from the ref files; `is_clean` always needs git.
        let result = GitCli::with_env(env).is_clean(fx.path()).await;
        match result {
            Err(VcsError::Fatal { detail }) => {
                assert!(detail.contains("git is not installed"), "{detail}");
            }
            other => panic!("expected Fatal, got {other:?}"),
        }
    }
}
