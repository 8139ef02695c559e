//! Reference backends: the in-memory store, the git CLI, the agent process executors and the
//! tracing notifier.

mod agent_process;
mod claude_executor;
mod command_executor;
pub mod stream_json;

pub use claude_executor::ClaudeExecutor;
pub use command_executor::{AgentCmdError, CommandExecutor, prompt_file_for};
