//! # scripted-model
//!
//! A scripted model API server, so the real agent CLIs can be driven offline: point the
//! Claude CLI's `ANTHROPIC_BASE_URL` (Messages API), the Codex CLI's model provider
//! (`<base_url>/v1`, Responses API, see [`openai`]) or the Gemini CLI's
//! `GOOGLE_GEMINI_BASE_URL` (see [`gemini`]) at [`ModelServer::base_url`] and the CLI talks to
//! a [`Script`] instead of a model. The CLI still does the real work: it runs the `Bash`, `Edit`
//! and `Write` tool calls the script makes, in its working directory, and reports the results
//! back, exactly as it would with a real model.
//!
//! [`Turn::PlanAgent`] acts on the agent-loop's prompts like a model would: it ticks the
//! first open task of the plan named in the prompt and commits it, or accepts the first
//! implemented task as the reviewer, and answers with the sentence the loop expects.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use scripted_model::{ModelServer, Script, Turn};
//!
//! let script = Script::plan_agent()
//!     .then(Turn::Error { status: 529, body: None, retry_after: None });
//! let server = ModelServer::start(script)?;
//! // ANTHROPIC_BASE_URL=<server.base_url()> ANTHROPIC_API_KEY=test claude -p ...
//! println!("{}", server.base_url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod cli;
pub mod gemini;
pub mod openai;
pub mod plan_agent;
mod reply;
pub mod request;
pub mod script;
mod server;

pub use request::{MessagesRequest, ToolResult};
pub use script::{Rule, Script, ToolCall, Turn, When};
pub use server::{ModelServer, RecordedRequest};
