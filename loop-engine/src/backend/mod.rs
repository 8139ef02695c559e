//! The four backend traits the engine talks to the world through, with their value types
//! (`diff.rs`: what the review operations of [`Vcs`] take and give).

mod diff;
mod executor;
mod notifier;
mod store;
mod vcs;

pub use crate::outcome::{FailureKind, Verdict};
pub use diff::*;
pub use executor::*;
pub use notifier::*;
pub use store::*;
pub use vcs::*;
