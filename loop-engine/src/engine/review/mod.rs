//! A person's review of a finished run (SPEC §12): `rules.rs` decides what is allowed when;
//! `diff.rs` the run's diff, `actions.rs` merge and scrap, `pr.rs` the pull request,
//! `retry.rs` running a failed run again, `worktrees.rs` listing and pruning worktrees.

mod actions;
mod diff;
mod pr;
mod retry;
mod rules;
mod worktrees;

pub use actions::{MergeOptions, ReviewOutcome};
pub use diff::RunDiff;
pub use pr::PrOptions;
pub(crate) use worktrees::remove_run_worktree;
pub use worktrees::{PruneReport, WorktreeInfo};
