//! # loop-engine
//!
//! The agent-loop SDK. It owns the domain (runs, steps, events, artifacts), the configuration,
//! the plan/prompt/completion logic and the run state machine, and talks to the world only
//! through four traits:
//!
//! - [`Executor`] runs the coding agent (default: the Claude Code CLI),
//! - [`Store`] persists everything (SQLite in `loop-store`, in-memory here),
//! - [`Vcs`] manages branches, worktrees and merges (default: the `git` CLI),
//! - [`Notifier`] tells the outside world (default: tracing logs).
//!
//! Reference implementations of each live in [`impls`]; test support (scripted executor, git
//! fixture, store contract suite, mockall mocks) lives in `testing` behind the `testing`
//! feature.
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
