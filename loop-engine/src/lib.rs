//! # loop-engine
//!
//! The agent-loop SDK. It owns the domain (runs, steps, events, artifacts), the configuration,
//! the plan/prompt/completion logic and the run state machine, and talks to the world only
//! through four traits:
//!
//! - [`Executor`] runs the coding agent and judges its outcome (default: the Claude Code CLI),
//! - [`Store`] persists everything (SQLite in `loop-store`, in-memory here),
//! - [`Vcs`] manages branches, worktrees and merges (default: the `git` CLI),
//! - [`Notifier`] tells the outside world (default: tracing logs).
//!
//! # Modules
//!
//! - [`domain`]: runs, steps, events, artifacts and their ids and states;
//! - [`backend`]: the four traits and their value types (requests, outcomes, verdicts,
//!   errors);
//! - [`config`]: the layered `key=value` configuration and its keys;
//! - [`engine`]: [`Engine`], its builder and what its operations return;
//! - [`impls`]: the reference implementations of the traits, and [`impls::run_agent`], the
//!   agent-process runner (streaming output, timeouts, cancellation, process-tree cleanup) a
//!   custom executor is built on;
//! - [`plan`]: reading a Markdown plan's tasks;
//! - [`process`]: the subprocess wrapper ([`process::Cmd`]) the implementations use;
//! - [`error`]: the engine's error types and [`error::chain`], the one error-chain formatter;
//! - `testing` (feature `testing`): a scripted executor, a git fixture, the store contract
//!   suite and mockall mocks.
//!
//! # Embedding
//!
//! A whole run in-process: a temporary git repository with a spec and a plan, the in-memory
//! store, the built-in simulated agent (no model, no network) and the git CLI.
//!
//! ```
//! use loop_engine::domain::{ExitReason, RunStatus};
//! use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
//! use loop_engine::testing::GitFixture;
//! use loop_engine::{CreateRun, Engine};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = GitFixture::new();
//! repo.write_file(".loop/config", "reviewer=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\n");
//! repo.write_file(".gitignore", "logs/\n");
//! repo.write_file("specs/demo.md", "# Demo\n");
//! repo.write_file("specs/planning/demo-plan.md", "- [ ] one\n- [ ] two\n");
//! repo.commit_all("spec and plan");
//!
//! let engine = Engine::builder()
//!     .store(MemoryStore::new())
//!     .executor(SimulatedAgent::new().with_git_env(repo.env()))
//!     .vcs(GitCli::with_env(repo.env()))
//!     .build()?;
//! let run = engine
//!     .create_run(CreateRun {
//!         workspace_root: repo.path().to_path_buf(),
//!         spec_path: "specs/demo.md".into(),
//!         ..CreateRun::default()
//!     })
//!     .await?
//!     .run;
//! engine.run_until_idle().await?;
//!
//! let run = engine.get_run(run.id).await?;
//! assert_eq!(run.status, RunStatus::Completed);
//! assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
//! assert_eq!(run.tasks_done, 2);
//! # Ok(()) }
//! ```
//!
//! For a real agent, drop `.executor(...)` (the workspace's config then picks the Claude CLI
//! or an `agent_cmd` template) or pass your own [`Executor`]; for a durable store use
//! `loop_store::SqliteStore`.
#![deny(missing_docs)]

pub(crate) mod artifacts;
pub mod backend;
pub(crate) mod completion;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod impls;
pub(crate) mod machine;
pub(crate) mod naming;
pub(crate) mod outcome;
pub mod plan;
pub mod process;
pub(crate) mod prompt;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backend::{Executor, Notifier, Store, Vcs};
pub use engine::{CreateRun, Engine, EngineSettings};
