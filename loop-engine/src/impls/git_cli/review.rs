//! The review operations of [`GitCli`] beyond merge and diff (SPEC §12): removing a run's
//! worktree, deleting its branch, and opening a pull request with the GitHub CLI.

use std::path::Path;
use std::time::Duration;

use super::plumbing::{GitCli, failed, os_args, same_path};
use crate::backend::{PullRequest, VcsError};
use crate::process::{Cmd, ProcessError};

/// Upper bound for `gh pr create` (it talks to the network).
const GH_TIMEOUT: Duration = Duration::from_secs(120);

impl GitCli {
    pub(super) async fn remove_worktree(&self, repo: &Path, path: &Path) -> Result<bool, VcsError> {
        let entries = self.worktrees(repo).await?;
        if let Some(primary) = entries.first()
            && same_path(&primary.path, path)
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "{} is the repository's primary checkout, not a run's worktree; it is never removed",
                    path.display()
                ),
            });
        }
        let registered = entries.iter().skip(1).find(|e| same_path(&e.path, path));
        match registered {
            Some(entry) if entry.prunable || !path.exists() => {
                self.run(repo, ["worktree", "prune"]).await?;
                Ok(true)
            }
            Some(_) => {
                let target = path.as_os_str();
                let args = [
                    "worktree".as_ref(),
                    "remove".as_ref(),
                    "--force".as_ref(),
                    "--force".as_ref(),
                    target,
                ];
                self.run(repo, args).await?;
                Ok(true)
            }
            None if path.exists() => Err(VcsError::Conflict {
                detail: format!(
                    "{} is not a worktree of {}; it is left alone",
                    path.display(),
                    repo.display()
                ),
            }),
            None => Ok(false),
        }
    }

    pub(super) async fn delete_branch(&self, repo: &Path, branch: &str) -> Result<bool, VcsError> {
        self.check_branch_name(repo, branch).await?;
        if self.branch_tip(repo, branch).await?.is_none() {
            return Ok(false);
        }
        let full = format!("refs/heads/{branch}");
        if let Some(entry) = self
            .worktrees(repo)
            .await?
            .into_iter()
            .find(|e| e.branch.as_deref() == Some(full.as_str()) && !e.prunable)
        {
            return Err(VcsError::Conflict {
                detail: format!(
                    "the branch {branch} is checked out in {}; it was not deleted",
                    entry.path.display()
                ),
            });
        }
        let args = ["branch", "-D", "--", branch];
        let out = self.git(repo, args).await?;
        if out.success() {
            Ok(true)
        } else {
            Err(failed(repo, &os_args(args), &out))
        }
    }

    pub(super) async fn create_pull_request(&self, req: &PullRequest) -> Result<String, VcsError> {
        let mut cmd = Cmd::new("gh", &req.dir)
            .args([
                "pr", "create", "--head", &req.head, "--base", &req.base, "--title", &req.title,
                "--body", &req.body,
            ])
            .env("GH_PROMPT_DISABLED", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("NO_COLOR", "1")
            .timeout(Some(GH_TIMEOUT));
        if req.draft {
            cmd = cmd.arg("--draft");
        }
        let out = cmd.output().await.map_err(|e| match e {
            ProcessError::NotFound { .. } => VcsError::ToolMissing {
                tool: "gh".into(),
                detail: "the GitHub CLI `gh` is not installed or not on loopd's PATH; install it \
                         (https://cli.github.com) and log in with `gh auth login` to open pull \
                         requests"
                    .into(),
            },
            other => VcsError::Fatal {
                detail: format!("cannot run gh: {}", crate::error::chain(&other)),
            },
        })?;
        if !out.success() {
            return Err(VcsError::Fatal {
                detail: format!(
                    "`gh pr create --head {} --base {}` failed (exit {}): {}",
                    req.head,
                    req.base,
                    out.code,
                    out.stderr_text()
                ),
            });
        }
        // gh prints the new pull request's address as its last line.
        let stdout = out.stdout_text();
        let url = stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with("http://") || l.starts_with("https://"))
            .unwrap_or(stdout.trim());
        if url.is_empty() {
            return Err(VcsError::Fatal {
                detail: "gh pr create succeeded but printed no pull request address".into(),
            });
        }
        Ok(url.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::git_cli::test_support::*;
    use crate::testing::GitFixture;

    #[tokio::test]
    async fn a_worktree_is_removed_and_its_branch_deleted_and_the_primary_is_refused() {
        let fx = GitFixture::new();
        let vcs = cli(&fx);
        let wt = fx.root().join("repo.run-a");
        vcs.prepare_worktree(fx.path(), &wt, "run/a", "main")
            .await
            .unwrap();
        std::fs::write(wt.join("scratch.txt"), "uncommitted\n").unwrap();
        assert!(matches!(
            vcs.delete_branch(fx.path(), "run/a").await,
            Err(VcsError::Conflict { .. })
        ));
        assert!(vcs.remove_worktree(fx.path(), &wt).await.unwrap());
        assert!(!wt.exists());
        assert!(!vcs.remove_worktree(fx.path(), &wt).await.unwrap());
        assert!(vcs.delete_branch(fx.path(), "run/a").await.unwrap());
        assert!(!vcs.delete_branch(fx.path(), "run/a").await.unwrap());
        assert!(
            !vcs.list_branches(fx.path())
                .await
                .unwrap()
                .contains(&"run/a".to_owned())
        );
        assert!(matches!(
            vcs.remove_worktree(fx.path(), fx.path()).await,
            Err(VcsError::Conflict { .. })
        ));
        let stranger = fx.root().join("not-a-worktree");
        std::fs::create_dir_all(&stranger).unwrap();
        assert!(matches!(
            vcs.remove_worktree(fx.path(), &stranger).await,
            Err(VcsError::Conflict { .. })
        ));
        assert!(stranger.is_dir());
    }
}
