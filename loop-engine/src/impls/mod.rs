//! Reference backends: the in-memory store, the git CLI, the agent process executors and the
//! tracing notifier.

mod git_cli;
mod memory_store;

pub use git_cli::{GitCli, RUN_ID_TRAILER};
pub use memory_store::MemoryStore;
