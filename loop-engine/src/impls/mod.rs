//! Reference backends: the in-memory store, the git CLI, the agent process executors (the
//! Claude, Codex and Gemini CLIs and the command template), the simulated agent, the tracing
//! notifier and the built-in notifiers (`notify`: webhook, command, desktop, the retrying
//! queue); and [`run_agent`], the agent-process runner they are built on, for custom executors.

mod agent_cli;
#[cfg(test)]
mod agent_containment_tests;
mod agent_process;
mod claude_executor;
mod codex_executor;
mod command_executor;
mod gemini_executor;
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
pub use codex_executor::CodexExecutor;
pub use command_executor::{AgentCmdError, CommandExecutor, prompt_file_for};
pub use gemini_executor::GeminiExecutor;
pub use git_cli::{GitCli, RUN_ID_TRAILER};
pub use log_notifier::LogNotifier;
pub use memory_store::MemoryStore;
pub use sim_agent::{SimResult, SimulatedAgent};

/// Splits a `codex_args` / `gemini_args` value into words; the error says why it cannot be.
pub(crate) fn agent_cli_split(key: &str, value: Option<&str>) -> Result<Vec<String>, String> {
    agent_cli::split_args(key, value)
}
