//! The merge and scrap actions of a person's review (SPEC §12). Each takes the workspace's
//! preparation lock (the one the run's own merge and worktree creation take), reads the run
//! again under it and asks [`rules`](super::rules), so two requests for the same run act at
//! most once: the second sees what the first did and is refused.

use std::time::Duration;

use crate::backend::{MergeOutcome, MergeRequest, VcsError};
use crate::config::{Config, WorktreeCleanup};
use crate::domain::payloads::{ReviewAction, ReviewActionKind};
use crate::domain::{EventPayload, MergeStrategy, NewEvent, ReviewStatus, Run, RunId, now_ms};
use crate::engine::core::Engine;
use crate::engine::inner::Inner;
use crate::engine::review::rules::{self, Action};
use crate::engine::review::worktrees::remove_run_worktree;
use crate::error::EngineError;

/// How often an action that found a git lock held tries again (about 14 s in all).
const LOCK_RETRIES: u64 = 10;

/// What a merge action asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOptions {
    /// `squash` or `merge` (default: the run's `merge_strategy`, `squash` when that is `none`).
    pub strategy: Option<MergeStrategy>,
    /// The branch to merge into (default: the run's merge target, else its base branch).
    pub target: Option<String>,
}

/// What a review action did: the run as stored afterwards and what happened, in words.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewOutcome {
    /// The run afterwards.
    pub run: Run,
    /// What was done or left alone (branch merged, worktree removed, target untouched, ...).
    pub details: Vec<String>,
}

/// Refuses `action` on `run` when the rules say so.
pub(super) fn allow(action: Action, run: &Run) -> Result<(), EngineError> {
    match rules::refusal(action, run) {
        Some(detail) => Err(EngineError::InvalidState {
            run_id: run.id,
            detail,
        }),
        None => Ok(()),
    }
}

/// Calls `op` again while git reports a held lock (a user's git running), a while.
pub(super) async fn with_lock_retries<T, F, Fut>(run_id: RunId, mut op: F) -> Result<T, VcsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VcsError>>,
{
    let mut attempt = 0u64;
    loop {
        match op().await {
            Err(VcsError::Retryable { detail }) if attempt < LOCK_RETRIES => {
                attempt += 1;
                tracing::info!(%run_id, %detail, attempt, "review action waits for a git lock");
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Stores the run with its new review state and records the `REVIEW_ACTION` event.
pub(super) async fn record(
    inner: &Inner,
    run: &mut Run,
    status: ReviewStatus,
    mut action: ReviewAction,
) -> Result<(), EngineError> {
    run.review_status = status;
    run.review_action_at = Some(now_ms());
    inner.store.update_run(run).await?;
    action.review_status = status.as_str().to_owned();
    inner
        .emit(NewEvent::typed(run.id, &EventPayload::ReviewAction(action)))
        .await?;
    Ok(())
}

/// The `REVIEW_ACTION` payload of `kind` for `run`, to be filled in.
pub(super) fn action_payload(run: &Run, kind: ReviewActionKind) -> ReviewAction {
    ReviewAction {
        run_id: run.id,
        action: kind,
        review_status: String::new(),
        target: None,
        strategy: None,
        merge_commit: None,
        pr_url: None,
        details: Vec::new(),
    }
}

impl Engine {
    /// Merges a finished run's branch into a target at a person's request (`POST
    /// /runs/{id}/merge`), with the same compare-and-swap of the target ref as the run's own
    /// merge: at most once per run; a conflict is [`EngineError::MergeConflict`] with every
    /// branch, ref, index and checkout as it was; a target checked out with uncommitted
    /// changes is refused the same way (nothing changed). With `worktree_cleanup=on_merge`
    /// the run's worktree is removed afterwards.
    pub async fn merge_run(
        &self,
        id: RunId,
        options: MergeOptions,
    ) -> Result<ReviewOutcome, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        allow(Action::Merge, &run)?;
        let lock = self.inner.prep_lock(&run.workspace_root).await;
        let _guard = lock.lock().await;
        let mut run = self.inner.store.get_run(id).await?;
        allow(Action::Merge, &run)?;
        let target = rules::merge_target(&run, options.target.as_deref());
        let strategy = rules::merge_strategy(&run, options.strategy).map_err(|detail| {
            EngineError::InvalidInput {
                field: "strategy".into(),
                detail,
            }
        })?;
        let req = MergeRequest {
            run_id: run.id,
            repo: run.workspace_root.clone(),
            run_branch: run.run_branch.clone(),
            target_branch: target.clone(),
            base_branch: run.base_branch.clone(),
            strategy,
            message: format!(
                "loop: {} ({} of {} tasks)",
                run.name, run.tasks_done, run.tasks_total
            ),
        };
        let outcome = with_lock_retries(id, || self.inner.vcs.merge(&req)).await;
        let (commit, checkout) = match outcome {
            Ok(MergeOutcome::Merged { commit, checkout }) => (commit, checkout),
            Ok(MergeOutcome::AlreadyMerged { commit }) => (commit, None),
            Ok(MergeOutcome::NothingToMerge) => {
                return Err(EngineError::InvalidState {
                    run_id: id,
                    detail: format!(
                        "nothing to merge: {target} already holds every change of {}",
                        run.run_branch
                    ),
                });
            }
            Ok(MergeOutcome::Pending { reason }) => {
                return Err(EngineError::InvalidState {
                    run_id: id,
                    detail: reason,
                });
            }
            Err(VcsError::MergeConflict { paths, detail }) => {
                return Err(EngineError::MergeConflict {
                    run_id: id,
                    paths,
                    detail,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut details = vec![format!(
            "{} merged into {target} ({strategy}) at {commit}",
            run.run_branch
        )];
        if let Some(dir) = &checkout {
            details.push(format!(
                "your checkout {} is now on {target} at {commit}",
                dir.display()
            ));
        }
        run.merge_commit = Some(commit.clone());
        let cleanup = Config::from_json(&run.config)
            .map(|c| c.worktree_cleanup)
            .unwrap_or(WorktreeCleanup::Never);
        if cleanup == WorktreeCleanup::OnMerge {
            details.push(remove_run_worktree(&self.inner, &run).await);
        }
        let mut payload = action_payload(&run, ReviewActionKind::Merge);
        payload.target = Some(target);
        payload.strategy = Some(strategy);
        payload.merge_commit = Some(commit);
        payload.details = details.clone();
        record(&self.inner, &mut run, ReviewStatus::Merged, payload).await?;
        Ok(ReviewOutcome {
            run: self.inner.store.get_run(id).await?,
            details,
        })
    }

    /// Scraps a finished run (`POST /runs/{id}/scrap`): removes its worktree (uncommitted
    /// changes in it included) and deletes its branch; the merge target and the base branch
    /// are never touched.
    pub async fn scrap(&self, id: RunId) -> Result<ReviewOutcome, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        allow(Action::Scrap, &run)?;
        let lock = self.inner.prep_lock(&run.workspace_root).await;
        let _guard = lock.lock().await;
        let mut run = self.inner.store.get_run(id).await?;
        allow(Action::Scrap, &run)?;
        let protected = [Some(&run.base_branch), run.merge_target_branch.as_ref()];
        if protected.contains(&Some(&run.run_branch)) {
            return Err(EngineError::InvalidState {
                run_id: id,
                detail: format!(
                    "the run branch {} is also the run's base or merge target; it is not deleted",
                    run.run_branch
                ),
            });
        }
        let repo = run.workspace_root.clone();
        let mut details = Vec::new();
        let removed = with_lock_retries(id, || {
            self.inner.vcs.remove_worktree(&repo, &run.worktree_path)
        })
        .await?;
        details.push(if removed {
            format!("worktree {} removed", run.worktree_path.display())
        } else {
            format!("worktree {} was already gone", run.worktree_path.display())
        });
        let deleted =
            with_lock_retries(id, || self.inner.vcs.delete_branch(&repo, &run.run_branch)).await?;
        details.push(if deleted {
            format!("branch {} deleted", run.run_branch)
        } else {
            format!("branch {} was already gone", run.run_branch)
        });
        details.push(format!(
            "merge target {} untouched",
            rules::merge_target(&run, None)
        ));
        let mut payload = action_payload(&run, ReviewActionKind::Scrap);
        payload.details = details.clone();
        record(&self.inner, &mut run, ReviewStatus::Scrapped, payload).await?;
        Ok(ReviewOutcome {
            run: self.inner.store.get_run(id).await?,
            details,
        })
    }
}
