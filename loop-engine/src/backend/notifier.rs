//! The `Notifier` trait: tells the outside world that a run started, completed or failed.

use async_trait::async_trait;

use crate::domain::Run;

/// What happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A worker started (or resumed) the run.
    RunStarted,
    /// The run completed.
    RunCompleted,
    /// The run failed.
    RunFailed,
    /// The run was canceled.
    RunCanceled,
}

/// A notification about a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    /// What happened.
    pub kind: NotificationKind,
    /// The run as it is now.
    pub run: Run,
    /// The exit reason or failure detail, if any.
    pub reason: Option<String>,
}

/// Errors of a [`Notifier`]. The engine logs them; they never change a run's outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifierError {
    /// Delivery failed but may work later.
    #[error("notification delivery failed")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Delivery cannot work (bad URL, ...).
    #[error("notification cannot be delivered: {detail}")]
    Fatal {
        /// What is wrong.
        detail: String,
    },
}

/// Receives run notifications.
///
/// # Contract
/// - Called on run start, completion, failure and cancel, in that order for one run, from the
///   run's own task. Calls for different runs may overlap.
/// - Must return in bounded time (apply your own timeout); the run waits for it.
/// - Errors are logged by the engine and otherwise ignored; a notifier cannot fail a run.
/// - Not retried by the engine: retry inside the notifier if delivery matters.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers one notification.
    async fn notify(&self, notification: &Notification) -> Result<(), NotifierError>;
}
