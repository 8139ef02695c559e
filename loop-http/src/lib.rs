//! # loop-http
//!
//! The wire: the HTTP control plane of SPEC §10 (hyper 1 server, SSE streams, token auth) and
//! the typed async client that `loopctl` and the tests use. Only this crate knows the wire
//! format.
//!
//! - [`server::serve`] serves an [`Engine`](loop_engine::Engine) on a listener until a
//!   cancellation token fires.
//! - [`client::Client`] talks to it.
//! - [`api`] holds the JSON types both sides share.

pub mod api;
pub mod client;
mod dash;
pub mod error;
mod query;
pub mod server;

pub use client::{Client, ClientError};
pub use error::ApiError;
pub use server::{ServerOptions, auth, serve};
