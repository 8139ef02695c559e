//! The four backend traits the engine talks to the world through, with their value types.

mod executor;
mod notifier;
mod store;
mod vcs;

pub use crate::outcome::{FailureKind, Verdict};
pub use executor::*;
pub use notifier::*;
pub use store::*;
pub use vcs::*;
