//! Why the driver stops before a run completes, and how errors become such a stop.

use crate::backend::{StoreError, VcsError};
use crate::domain::ExitReason;

/// Why the driver stopped before the run completed.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A user paused the run.
    Paused,
    /// A user canceled the run.
    Canceled,
    /// The engine is shutting down; the run goes back to the queue.
    Shutdown,
    /// Another worker holds the run now; leave it alone.
    LostLease,
    /// The run failed.
    Fail { reason: ExitReason, detail: String },
}

impl Stop {
    pub(crate) fn failed(detail: impl Into<String>) -> Self {
        Self::Fail {
            reason: ExitReason::Failed,
            detail: detail.into(),
        }
    }
}

/// The error and its sources, joined by ": " (the crate's one formatter).
pub(crate) use crate::error::chain;

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Self::failed(format!("store error: {}", chain(&e)))
    }
}

impl From<VcsError> for Stop {
    fn from(e: VcsError) -> Self {
        Self::failed(format!("git error: {}", chain(&e)))
    }
}

impl From<crate::error::EngineError> for Stop {
    fn from(e: crate::error::EngineError) -> Self {
        Self::failed(chain(&e))
    }
}
