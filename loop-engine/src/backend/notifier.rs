//! The `Notifier` trait: tells the outside world that a run started, completed or failed,
//! waits for a usage limit, ran out of budget, or got a review action.

use async_trait::async_trait;

use crate::domain::{Event, Run};

/// What happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotificationKind {
    /// A worker started (or resumed) the run.
    RunStarted,
    /// The run completed.
    RunCompleted,
    /// The run failed.
    RunFailed,
    /// The run was canceled.
    RunCanceled,
    /// The run waits for the agent's usage limit to reset (`USAGE_LIMIT_WAIT`).
    UsageLimitWait,
    /// The run failed because it spent its budget (exit reason `budget_exhausted:*`).
    BudgetExhausted,
    /// A person's review action on the run was carried out: a merge, scrap or pull request
    /// (`REVIEW_ACTION`) or a retry (`RUN_RETRIED`).
    ReviewAction,
}

impl NotificationKind {
    /// The spelling in JSON (`run_completed`, `usage_limit_wait`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunStarted => "run_started",
            Self::RunCompleted => "run_completed",
            Self::RunFailed => "run_failed",
            Self::RunCanceled => "run_canceled",
            Self::UsageLimitWait => "usage_limit_wait",
            Self::BudgetExhausted => "budget_exhausted",
            Self::ReviewAction => "review_action",
        }
    }
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
    /// The event behind it, for the notifications built from events (the built-in
    /// notifiers'); `None` for the engine's direct calls of its own notifier.
    #[serde(default)]
    pub event: Option<Event>,
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
