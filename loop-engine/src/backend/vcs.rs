//! The `Vcs` trait: branches, worktrees, HEAD queries and the final merge. The default
//! implementation shells out to `git`; the engine never runs git itself.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::{Diff, DiffRequest, PullRequest};
use crate::domain::{MergeStrategy, RunId};

/// Errors of a [`Vcs`]. The engine branches on the variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VcsError {
    /// The path is not inside a repository, or a branch/revision does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The operation conflicts with the repository's state: a merge conflict, a dirty tree, a
    /// path taken by another worktree, a ref that moved under us. Nothing was changed.
    #[error("{detail}")]
    Conflict {
        /// What conflicts, in words a user can act on.
        detail: String,
    },
    /// A transient failure (e.g. a lock held by a concurrent git process).
    #[error("git temporarily failed: {detail}")]
    Retryable {
        /// What failed.
        detail: String,
    },
    /// A merge would conflict: nothing was changed (no branch, ref, index or checkout).
    #[error("{detail}")]
    MergeConflict {
        /// The conflicting paths, relative to the repository root.
        paths: Vec<String>,
        /// What conflicts, in words a user can act on.
        detail: String,
    },
    /// A tool the operation needs is not installed (e.g. `gh` for a pull request).
    #[error("{detail}")]
    ToolMissing {
        /// The program's name.
        tool: String,
        /// What it is needed for and how to get it.
        detail: String,
    },
    /// Anything else: git missing, a corrupt repository, an I/O error.
    #[error("{detail}")]
    Fatal {
        /// What failed (the command and its stderr).
        detail: String,
    },
}

/// What [`Vcs::prepare_worktree`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorktreeReport {
    /// The run branch was created now (it did not exist).
    pub created_branch: bool,
    /// The worktree was added now (it did not exist).
    pub created_worktree: bool,
    /// Debris that was cleaned up first (stale lock files, stale worktree registrations).
    pub cleaned: Vec<String>,
}

/// A request to bring a finished run branch into its merge target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeRequest {
    /// The run (recorded in the merge commit so a repeated merge is detected).
    pub run_id: RunId,
    /// The primary checkout of the repository.
    pub repo: PathBuf,
    /// The branch with the work.
    pub run_branch: String,
    /// The branch to merge into; created from `base_branch` if missing.
    pub target_branch: String,
    /// The run's base branch.
    pub base_branch: String,
    /// `squash` or `merge` (`none` is never passed).
    pub strategy: MergeStrategy,
    /// Subject line of the merge or squash commit.
    pub message: String,
}

/// What a merge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The target now holds the work at this commit.
    Merged {
        /// The new tip of the target.
        commit: String,
        /// The checkout that had the target checked out and was moved along with it (its
        /// index and working tree now match `commit`); `None` when no checkout has the target.
        checkout: Option<PathBuf>,
    },
    /// The target already held this run's merge (a repeated call after a crash).
    AlreadyMerged {
        /// The tip of the target.
        commit: String,
    },
    /// The run branch has no changes relative to the target.
    NothingToMerge,
    /// The merge cannot land now without touching a user's work: the target is checked out
    /// in a checkout with uncommitted changes (or untracked files in the way), or in a linked
    /// worktree. Nothing changed; calling [`Vcs::merge`] again later retries it.
    Pending {
        /// Why, in words a user can act on.
        reason: String,
    },
}

/// Version control for runs.
///
/// # Contract
/// - **Never pushes** and never touches remotes.
/// - **Idempotency**: `prepare_worktree` on an existing, matching worktree reuses it; `merge`
///   of a run that was already merged returns [`MergeOutcome::AlreadyMerged`] and merges
///   nothing twice (the target ref moves with a compare-and-swap).
/// - **Atomicity**: a failed merge leaves the target branch, the run branch and the primary
///   checkout as they were (a conflict aborts the merge).
/// - **The user's checkout**: a merge never checks a branch out. A checkout is touched only
///   when it has the target itself checked out: a clean one is moved along with the target,
///   a dirty one makes the merge [`MergeOutcome::Pending`] (nothing changed).
/// - **Cancellation**: futures may be dropped between git commands; a dropped call may leave a
///   lock file, which `prepare_worktree` cleans up.
/// - **Errors**: see [`VcsError`]; `Conflict` messages are shown to users as run failure reasons.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Vcs: Send + Sync {
    /// The top of the repository containing `path`.
    async fn repo_root(&self, path: &Path) -> Result<PathBuf, VcsError>;

    /// The repository's default branch (remote HEAD, else the current branch of the primary
    /// checkout, else `main`).
    async fn default_branch(&self, repo: &Path) -> Result<String, VcsError>;

    /// All local branch names.
    async fn list_branches(&self, repo: &Path) -> Result<Vec<String>, VcsError>;

    /// Creates `branch` from `base` (if missing) and a worktree for it at `path` (if missing),
    /// cleaning up stale locks and stale worktree registrations first.
    async fn prepare_worktree(
        &self,
        repo: &Path,
        path: &Path,
        branch: &str,
        base: &str,
    ) -> Result<WorktreeReport, VcsError>;

    /// The commit checked out in `dir`, or `None` in a repository without commits.
    async fn head(&self, dir: &Path) -> Result<Option<String>, VcsError>;

    /// True when `dir` has no staged, unstaged or untracked changes.
    async fn is_clean(&self, dir: &Path) -> Result<bool, VcsError>;

    /// Puts the uncommitted changes of the worktree at `dir` (untracked files included) aside
    /// in a git stash labelled `message`, leaving the tree at HEAD; true when there was
    /// something to put aside. Used at recovery: a step cut short by a crash never committed,
    /// so its half-done edits must not count as done, yet they stay recoverable. The default
    /// does nothing, for backends that cannot.
    async fn stash_changes(&self, dir: &Path, message: &str) -> Result<bool, VcsError> {
        let _ = (dir, message);
        Ok(false)
    }

    /// Writes what a postmortem reads about the worktree at `dir` into the folder `out_dir`
    /// (SPEC §12): `git-status.txt` (`git status -sb`), `git-last-commit.txt`
    /// (`git log -1 --stat`), `git-last-commit.patch` (`git show -1 --stat --patch`) and
    /// `git-diff.patch` (`git diff`: the uncommitted changes); returns the files written.
    /// Reads only: no ref, index entry or file of the worktree changes. The default writes
    /// nothing and fails saying so, for backends that cannot.
    async fn write_snapshot(&self, dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, VcsError> {
        let _ = (dir, out_dir);
        Err(VcsError::Fatal {
            detail: "this version control backend cannot write a worktree snapshot".into(),
        })
    }

    /// Checks that the worktree at `dir` still has `branch` checked out and that `since` (a
    /// commit the branch held earlier) is still in its history: an agent that switched branches
    /// or rewrote history gets `Conflict` saying which. The default accepts everything, for
    /// backends that cannot tell.
    async fn check_branch(
        &self,
        dir: &Path,
        branch: &str,
        since: Option<String>,
    ) -> Result<(), VcsError> {
        let _ = (dir, branch, since);
        Ok(())
    }

    /// The contents of `path` (relative to the repository root) at `rev`, `None` if absent.
    async fn show_file(
        &self,
        repo: &Path,
        rev: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, VcsError>;

    /// Stages exactly `paths` (relative to `dir`) and commits them; `None` when nothing changed.
    async fn commit_paths(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        message: &str,
    ) -> Result<Option<String>, VcsError>;

    /// The environment that gives commits made in `dir` an identity when git has none
    /// configured there (no `user.name`/`user.email` in the repository, the user's or the
    /// system's config, nor `GIT_AUTHOR_*`/`GIT_COMMITTER_*` set): the engine's fallback
    /// identity as `GIT_AUTHOR_NAME`, `GIT_AUTHOR_EMAIL`, `GIT_COMMITTER_NAME` and
    /// `GIT_COMMITTER_EMAIL`, for the agent. Empty when git has an identity. Asked once per run.
    /// The default is empty, for backends without identities.
    async fn identity_env(&self, dir: &Path) -> Result<Vec<(String, String)>, VcsError> {
        let _ = dir;
        Ok(Vec::new())
    }

    /// Removes the stale locks a killed git leaves in the worktree at `dir` (`index.lock`,
    /// `HEAD.lock`, the lock of its checked-out branch); true if one was removed. Call it only
    /// when no git process works in that worktree.
    async fn remove_stale_lock(&self, dir: &Path) -> Result<bool, VcsError>;

    /// Brings the run branch into the target (see [`MergeRequest`]) without checking anything
    /// out; a checkout that has the target checked out is updated when clean, else the merge
    /// is [`MergeOutcome::Pending`]. Safe to call again (e.g. to retry a pending merge).
    async fn merge(&self, req: &MergeRequest) -> Result<MergeOutcome, VcsError>;

    /// What `req.head` changed against `req.base` (or their merge base): its commits, its
    /// files with patches, its counts, within `req.limits` (memory stays bounded by them
    /// whatever the size of the change). Read-only. A revision that does not exist is
    /// `NotFound`.
    async fn diff(&self, req: &DiffRequest) -> Result<Diff, VcsError>;

    /// The commit `rev` names in `repo`, `None` when there is none.
    async fn resolve_commit(&self, repo: &Path, rev: &str) -> Result<Option<String>, VcsError>;

    /// Removes the linked worktree at `path` of the repository at `repo`, uncommitted
    /// changes included, and forgets its registration; false when there was none (nothing on
    /// disk, nothing registered). Never removes the primary checkout (`Conflict`).
    async fn remove_worktree(&self, repo: &Path, path: &Path) -> Result<bool, VcsError>;

    /// Deletes the local branch `branch` whatever it holds; false when it did not exist. A
    /// branch checked out somewhere is `Conflict` (nothing deleted).
    async fn delete_branch(&self, repo: &Path, branch: &str) -> Result<bool, VcsError>;

    /// Opens a pull request of `req.head` into `req.base` with the code host's CLI (for git:
    /// the GitHub CLI `gh`) and returns its address. A missing CLI is
    /// [`VcsError::ToolMissing`]; a CLI that fails is `Fatal` with its message. This is the
    /// one operation that may talk to a remote, and only through that CLI.
    async fn create_pull_request(&self, req: &PullRequest) -> Result<String, VcsError>;
}
