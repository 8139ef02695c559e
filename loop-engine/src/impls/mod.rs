//! Reference backends: the in-memory store, the git CLI, the agent process executors (Claude
//! CLI and command template), the simulated agent, the tracing notifier and the built-in
//! notifiers (`notify`: webhook, command, desktop, the retrying queue); and
//! [`run_agent`], the agent-process runner they are built on, for custom executors.

#[cfg(test)]
mod agent_containment_tests;
mod agent_process;
mod claude_executor;
mod command_executor;
mod git_cli;
mod git_refs;
mod log_notifier;
mod memory_store;
pub mod notify;
pub(crate) mod sim_agent;
pub mod stream_json;

pub use agent_process::{ProgramKey, run_agent};
pub(crate) use claude_executor::root_refusal;
pub use claude_executor::{ClaudeExecutor, installed_claude};
pub use command_executor::{AgentCmdError, CommandExecutor, prompt_file_for};
pub use git_cli::{GitCli, RUN_ID_TRAILER};
pub use log_notifier::LogNotifier;
pub use memory_store::MemoryStore;
pub use sim_agent::{SimResult, SimulatedAgent};
