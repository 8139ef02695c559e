//! What a person may do with a run, and when (SPEC §12): the pure decisions behind the
//! review actions. No IO: each rule takes the run as stored and says yes, or why not.

use crate::domain::{MergeStrategy, ReviewStatus, Run, RunStatus};

/// A review action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Merge the run branch into a target.
    Merge,
    /// Remove the worktree and delete the run branch.
    Scrap,
    /// Open a pull request for the run branch.
    CreatePr,
    /// Run a failed or canceled run again from its last durable step.
    Retry,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Scrap => "scrap",
            Self::CreatePr => "open a pull request for",
            Self::Retry => "retry",
        }
    }
}

/// Why `action` is refused for `run` as stored, or `None` when it is allowed. Every action
/// is refused while the run is active (pending, running or paused): its agent may be
/// writing to the branch right now.
pub(crate) fn refusal(action: Action, run: &Run) -> Option<String> {
    let verb = action.verb();
    if !run.status.is_terminal() {
        return Some(format!(
            "cannot {verb} a run that is {}; wait for it to end or cancel it first",
            run.status
        ));
    }
    let merged_at = || {
        run.merge_commit
            .as_deref()
            .map(|c| format!(" at {c}"))
            .unwrap_or_default()
    };
    match (action, run.review_status) {
        (Action::Merge, ReviewStatus::Merged) => Some(format!(
            "already merged{}; a run is merged at most once",
            merged_at()
        )),
        (Action::Scrap | Action::CreatePr | Action::Retry, ReviewStatus::Merged) => {
            Some(format!("cannot {verb} a run that is merged{}", merged_at()))
        }
        (_, ReviewStatus::Scrapped) => Some(format!(
            "cannot {verb} a run that was scrapped: its worktree and the branch {} are gone",
            run.run_branch
        )),
        (Action::CreatePr, ReviewStatus::PrCreated) => Some(format!(
            "a pull request is already open for it: {}",
            run.pr_url.as_deref().unwrap_or("(address not recorded)")
        )),
        (Action::Retry, _) if run.status == RunStatus::Completed => Some(
            "cannot retry a run that completed; only a failed or canceled run is retried".into(),
        ),
        _ => None,
    }
}

/// The branch a merge action goes into: the one asked for, else the run's merge target,
/// else its base branch.
pub(crate) fn merge_target(run: &Run, asked: Option<&str>) -> String {
    asked
        .map(str::to_owned)
        .or_else(|| run.merge_target_branch.clone())
        .unwrap_or_else(|| run.base_branch.clone())
}

/// The strategy of a merge action: the one asked for, else the run's own, else `squash`
/// (a run configured with `none` is merged only when a person asks). `none` cannot be asked
/// for.
pub(crate) fn merge_strategy(
    run: &Run,
    asked: Option<MergeStrategy>,
) -> Result<MergeStrategy, String> {
    match asked {
        Some(MergeStrategy::None) => {
            Err("strategy `none` merges nothing; use `squash` or `merge`".into())
        }
        Some(s) => Ok(s),
        None if run.merge_strategy == MergeStrategy::None => Ok(MergeStrategy::Squash),
        None => Ok(run.merge_strategy),
    }
}

/// The iteration ceiling of a retried run: `fresh` more iterations than it has run.
pub(crate) fn retry_ceiling(iterations_run: u32, fresh: u32) -> u32 {
    iterations_run.saturating_add(fresh.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::store_contract::sample_run;

    fn run(status: RunStatus, review: ReviewStatus) -> Run {
        let mut run = sample_run("/ws/rules");
        run.status = status;
        run.review_status = review;
        run
    }

    #[test]
    fn every_action_waits_for_the_run_to_end() {
        for status in [RunStatus::Pending, RunStatus::Running, RunStatus::Paused] {
            for action in [
                Action::Merge,
                Action::Scrap,
                Action::CreatePr,
                Action::Retry,
            ] {
                let why = refusal(action, &run(status, ReviewStatus::Pending)).unwrap();
                assert!(why.contains(status.as_str()), "{why}");
            }
        }
    }

    #[test]
    fn the_table_of_actions() {
        use Action::*;
        use ReviewStatus as R;
        use RunStatus as S;
        // (action, status, review, allowed)
        let table = [
            (Merge, S::Completed, R::Pending, true),
            (Merge, S::Failed, R::Pending, true),
            (Merge, S::Completed, R::PrCreated, true),
            (Merge, S::Completed, R::Merged, false),
            (Merge, S::Completed, R::Scrapped, false),
            (Scrap, S::Completed, R::Pending, true),
            (Scrap, S::Canceled, R::PrCreated, true),
            (Scrap, S::Completed, R::Merged, false),
            (Scrap, S::Failed, R::Scrapped, false),
            (CreatePr, S::Completed, R::Pending, true),
            (CreatePr, S::Completed, R::PrCreated, false),
            (CreatePr, S::Completed, R::Merged, false),
            (Retry, S::Failed, R::Pending, true),
            (Retry, S::Canceled, R::Pending, true),
            (Retry, S::Failed, R::PrCreated, true),
            (Retry, S::Completed, R::Pending, false),
            (Retry, S::Failed, R::Scrapped, false),
            (Retry, S::Failed, R::Merged, false),
        ];
        for (action, status, review, allowed) in table {
            let verdict = refusal(action, &run(status, review));
            assert_eq!(
                verdict.is_none(),
                allowed,
                "{action:?} on {status} / {review}: {verdict:?}"
            );
        }
    }

    #[test]
    fn targets_and_strategies() {
        let mut r = run(RunStatus::Completed, ReviewStatus::Pending);
        r.merge_target_branch = None;
        assert_eq!(merge_target(&r, None), r.base_branch);
        r.merge_target_branch = Some("agent/x".into());
        assert_eq!(merge_target(&r, None), "agent/x");
        assert_eq!(merge_target(&r, Some("release")), "release");
        r.merge_strategy = MergeStrategy::None;
        assert_eq!(merge_strategy(&r, None), Ok(MergeStrategy::Squash));
        assert_eq!(
            merge_strategy(&r, Some(MergeStrategy::Merge)),
            Ok(MergeStrategy::Merge)
        );
        assert!(merge_strategy(&r, Some(MergeStrategy::None)).is_err());
        assert_eq!(retry_ceiling(7, 5), 12);
        assert_eq!(retry_ceiling(7, 0), 8);
    }
}
