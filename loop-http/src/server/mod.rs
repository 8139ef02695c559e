//! The HTTP server of the control plane: [`serve`] accepts connections until its shutdown token
//! fires. Declarations and re-exports only; the logic lives in the named files.

mod accept;
pub mod auth;
mod body;
mod review;
mod routes;
mod sse;

pub use accept::{ServerOptions, serve};
