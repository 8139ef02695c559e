//! Reference backends: the in-memory store, the git CLI, the agent process executors and the
//! tracing notifier.

mod git_cli;
pub use git_cli::{GitCli, RUN_ID_TRAILER};
mod log_notifier;
pub(crate) mod sim_agent;
pub use log_notifier::LogNotifier;
pub use sim_agent::{SimResult, SimulatedAgent};
