//! Reference backends: the in-memory store, the git CLI, the agent process executors and the
//! tracing notifier.

mod memory_store;

pub use memory_store::MemoryStore;
