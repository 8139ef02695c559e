//! The HTTP server of the control plane: [`serve`] accepts connections until its shutdown token
//! fires. Declarations and re-exports only; the logic lives in the named files.

mod accept;
pub mod auth;
pub(crate) mod body;
mod review;
pub(crate) mod routes;
mod sse;

pub use accept::{ServerOptions, serve};
