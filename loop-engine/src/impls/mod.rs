//! Reference backends: the in-memory store, the git CLI, the agent process executors, the
//! simulated agent and the tracing notifier.

mod git_cli;
mod log_notifier;
mod memory_store;
pub(crate) mod sim_agent;

pub use git_cli::{GitCli, RUN_ID_TRAILER};
pub use log_notifier::LogNotifier;
pub use memory_store::MemoryStore;
pub use sim_agent::{SimResult, SimulatedAgent};
