//! Reference backends: the in-memory store, the git CLI, the agent process executors and the
//! tracing notifier.
