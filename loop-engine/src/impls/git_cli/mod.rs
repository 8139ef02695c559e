//! The reference [`Vcs`]: it shells out to the `git` CLI (2.38 or newer, for
//! `merge-tree --write-tree`) through the engine's subprocess door.
//!
//! Merges are computed without touching any checkout (`merge-tree`, `commit-tree`) and land
//! with a compare-and-swap on the target ref, so a conflict or a crash never leaves a
//! half-merged branch behind. Every merge commit carries a `Loop-Run-Id` trailer, which is how
//! a repeated merge of the same run is recognised. This backend never fetches and never pushes.
//!
//! The parts: `plumbing` (the git command door and shared helpers), `refs` (refs, HEAD,
//! branch names, commits), `worktrees` (worktree listing and preparation, cleanliness, stale
//! locks), `merge`, `diff` (the bounded diff of a run), `review` (removing a
//! worktree, deleting a branch, `gh pr create`) and `snapshot` (what a postmortem reads). This
//! file only wires them to the [`Vcs`] trait.

mod diff;
mod merge;
mod plumbing;
mod refs;
mod review;
mod snapshot;
#[cfg(test)]
mod test_support;
mod worktrees;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::{
    Diff, DiffRequest, MergeOutcome, MergeRequest, PullRequest, Vcs, VcsError, WorktreeReport,
};

pub use merge::RUN_ID_TRAILER;
pub use plumbing::GitCli;

#[async_trait]
impl Vcs for GitCli {
    async fn repo_root(&self, path: &Path) -> Result<PathBuf, VcsError> {
        GitCli::repo_root(self, path).await
    }

    async fn default_branch(&self, repo: &Path) -> Result<String, VcsError> {
        GitCli::default_branch(self, repo).await
    }

    async fn list_branches(&self, repo: &Path) -> Result<Vec<String>, VcsError> {
        GitCli::list_branches(self, repo).await
    }

    async fn prepare_worktree(
        &self,
        repo: &Path,
        path: &Path,
        branch: &str,
        base: &str,
    ) -> Result<WorktreeReport, VcsError> {
        GitCli::prepare_worktree(self, repo, path, branch, base).await
    }

    async fn head(&self, dir: &Path) -> Result<Option<String>, VcsError> {
        GitCli::head(self, dir).await
    }

    async fn is_clean(&self, dir: &Path) -> Result<bool, VcsError> {
        GitCli::is_clean(self, dir).await
    }

    async fn stash_changes(&self, dir: &Path, message: &str) -> Result<bool, VcsError> {
        GitCli::stash_changes(self, dir, message).await
    }

    async fn write_snapshot(&self, dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, VcsError> {
        GitCli::write_snapshot(self, dir, out_dir).await
    }

    async fn check_branch(
        &self,
        dir: &Path,
        branch: &str,
        since: Option<String>,
    ) -> Result<(), VcsError> {
        GitCli::check_branch(self, dir, branch, since).await
    }

    async fn show_file(
        &self,
        repo: &Path,
        rev: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, VcsError> {
        GitCli::show_file(self, repo, rev, path).await
    }

    async fn commit_paths(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        message: &str,
    ) -> Result<Option<String>, VcsError> {
        GitCli::commit_paths(self, dir, paths, message).await
    }

    async fn identity_env(&self, dir: &Path) -> Result<Vec<(String, String)>, VcsError> {
        GitCli::identity_env(self, dir).await
    }

    async fn remove_stale_lock(&self, dir: &Path) -> Result<bool, VcsError> {
        GitCli::remove_stale_lock(self, dir).await
    }

    async fn merge(&self, req: &MergeRequest) -> Result<MergeOutcome, VcsError> {
        GitCli::merge(self, req).await
    }

    async fn diff(&self, req: &DiffRequest) -> Result<Diff, VcsError> {
        GitCli::diff(self, req).await
    }

    async fn resolve_commit(&self, repo: &Path, rev: &str) -> Result<Option<String>, VcsError> {
        GitCli::resolve(self, repo, rev, "commit").await
    }

    async fn remove_worktree(&self, repo: &Path, path: &Path) -> Result<bool, VcsError> {
        GitCli::remove_worktree(self, repo, path).await
    }

    async fn delete_branch(&self, repo: &Path, branch: &str) -> Result<bool, VcsError> {
        GitCli::delete_branch(self, repo, branch).await
    }

    async fn create_pull_request(&self, req: &PullRequest) -> Result<String, VcsError> {
        GitCli::create_pull_request(self, req).await
    }
}
