//! The engine: creates runs, schedules them under the concurrency caps, drives each run through
//! the loop of SPEC §6 with the backends, recovers after a crash, and fans out live events and
//! agent output.

mod core;
mod create;
mod driver;
mod hub;
mod metrics;
mod recovery;
mod report;
mod scheduler;
mod supervisor;

pub use core::{Engine, EngineBuilder, EngineSettings};
pub use create::{CreateRun, CreatedRun, PromptPreview, sandbox_problem};
pub use hub::{CurrentOutput, LiveOutput};
pub use metrics::{MetricsSnapshot, TimingSnapshot};
