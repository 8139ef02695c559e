//! Run worktrees as a person sees them (SPEC §12): where each run's worktree is, whether it
//! is still on disk and how big it is, and pruning the ones of finished, reviewed runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::RunFilter;
use crate::domain::{ReviewStatus, Run, RunId, RunStatus};
use crate::engine::core::Engine;
use crate::engine::inner::Inner;
use crate::engine::review::actions::with_lock_retries;
use crate::error::{EngineError, chain};

/// One run's worktree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeInfo {
    /// The run.
    pub run_id: RunId,
    /// The run's name.
    pub name: String,
    /// The worktree's folder.
    pub path: PathBuf,
    /// The run branch.
    pub branch: String,
    /// The run's status.
    pub status: RunStatus,
    /// The run's review status.
    pub review_status: ReviewStatus,
    /// The folder is on disk.
    pub present: bool,
    /// Bytes of the files under it (`.git` metadata included), `None` when gone.
    pub size_bytes: Option<u64>,
    /// `prune` would remove it: the run ended, a person reviewed it (merged, scrapped, pull
    /// request) and the folder is still there.
    pub prunable: bool,
}

/// What [`Engine::prune_worktrees`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// The worktrees removed (as they were before).
    pub removed: Vec<WorktreeInfo>,
    /// Worktrees that could not be removed, with why.
    pub failed: Vec<(WorktreeInfo, String)>,
}

/// The size of everything under `dir` (symlinks not followed), `None` when it is gone.
fn dir_size(dir: &Path) -> Option<u64> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() {
        return Some(meta.len());
    }
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Some(total)
}

/// True for a run whose worktree `prune` removes (the folder's presence aside).
fn reviewed(run: &Run) -> bool {
    run.status.is_terminal() && run.review_status != ReviewStatus::Pending
}

async fn info_of(run: &Run) -> WorktreeInfo {
    let path = run.worktree_path.clone();
    let size = tokio::task::spawn_blocking(move || dir_size(&path))
        .await
        .ok()
        .flatten();
    let present = run.worktree_path.is_dir();
    WorktreeInfo {
        run_id: run.id,
        name: run.name.clone(),
        path: run.worktree_path.clone(),
        branch: run.run_branch.clone(),
        status: run.status,
        review_status: run.review_status,
        present,
        size_bytes: if present { size } else { None },
        prunable: present && reviewed(run),
    }
}

/// Removes `run`'s worktree (the run is merged and `worktree_cleanup=on_merge`), returning
/// what happened in words; a failure is logged and reported, never raised: the merge stands.
pub(crate) async fn remove_run_worktree(inner: &Inner, run: &Run) -> String {
    let removed = with_lock_retries(run.id, || {
        inner
            .vcs
            .remove_worktree(&run.workspace_root, &run.worktree_path)
    })
    .await;
    match removed {
        Ok(true) => format!("worktree {} removed", run.worktree_path.display()),
        Ok(false) => format!("worktree {} was already gone", run.worktree_path.display()),
        Err(e) => {
            tracing::warn!(run_id = %run.id, error = %chain(&e), "cannot remove the worktree of a merged run");
            format!(
                "worktree {} kept: {}",
                run.worktree_path.display(),
                chain(&e)
            )
        }
    }
}

impl Engine {
    /// Every run's worktree (newest run first), optionally of one workspace only.
    pub async fn worktrees(
        &self,
        workspace_root: Option<PathBuf>,
    ) -> Result<Vec<WorktreeInfo>, EngineError> {
        let runs = self
            .inner
            .store
            .list_runs(&RunFilter {
                workspace_root,
                ..RunFilter::default()
            })
            .await?;
        let mut out = Vec::with_capacity(runs.len());
        for run in &runs {
            out.push(info_of(run).await);
        }
        Ok(out)
    }

    /// Removes the worktrees of runs that ended and were reviewed (merged, scrapped or with a
    /// pull request); the branches stay. Active and unreviewed runs are never touched.
    pub async fn prune_worktrees(
        &self,
        workspace_root: Option<PathBuf>,
    ) -> Result<PruneReport, EngineError> {
        let mut report = PruneReport::default();
        for info in self.worktrees(workspace_root).await? {
            if !info.prunable {
                continue;
            }
            let run = self.inner.store.get_run(info.run_id).await?;
            let lock = self.inner.prep_lock(&run.workspace_root).await;
            let _guard = lock.lock().await;
            // Read again under the lock: a retry may have made it active meanwhile.
            let run = self.inner.store.get_run(info.run_id).await?;
            if !reviewed(&run) {
                continue;
            }
            let removed = with_lock_retries(run.id, || {
                self.inner
                    .vcs
                    .remove_worktree(&run.workspace_root, &run.worktree_path)
            })
            .await;
            match removed {
                Ok(_) => report.removed.push(info),
                Err(e) => report.failed.push((info, chain(&e))),
            }
        }
        Ok(report)
    }
}
