//! The engine: creates runs, schedules them under the concurrency caps, drives each run through
//! the loop of SPEC §6 with the backends, recovers after a crash, and fans out live events and
//! agent output.

mod control;
mod core;
mod create;
mod driver;
mod hub;
mod inner;
mod metrics;
mod notify;
mod postmortem;
mod recovery;
mod report;
mod review;
mod scheduler;
mod supervisor;
#[cfg(test)]
mod tests;

pub use core::{Engine, EngineBuilder};
pub use create::{CreateRun, CreatedRun, PromptPreview, sandbox_problem};
pub use hub::{CurrentOutput, LiveOutput};
pub use inner::EngineSettings;
pub use metrics::{MetricsSnapshot, TimingSnapshot};
pub use postmortem::{
    AnalysisFile, PostmortemListing, PostmortemOptions, PostmortemReport, PostmortemStatus,
};
pub use review::{MergeOptions, PrOptions, PruneReport, ReviewOutcome, RunDiff, WorktreeInfo};
