//! The postmortem of a finished run (SPEC §12, the seed's `bin/loop-analyze` built in): a git
//! snapshot of the worktree and three reports by the run's executor in
//! `<run folder>/analysis/`. `analyse.rs` carries it out, `prompts.rs` writes the prompts,
//! `api.rs` is what [`Engine`](crate::Engine) offers for it.

mod analyse;
mod api;
mod prompts;

pub use analyse::{AnalysisFile, PostmortemOptions, PostmortemReport, PostmortemStatus};
pub(crate) use analyse::{after_run, applies_after};
pub use api::PostmortemListing;
