//! [`QueuedNotifier`]: any notifier behind a bounded queue, delivered by a task of its own
//! with retries and backoff. `notify` only enqueues, so a slow or dead receiver never holds
//! up a run; a full queue drops the notification (logged), and a delivery that keeps failing
//! is given up (logged). Nothing here can fail a run.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::backend::{Notification, Notifier, NotifierError};
use crate::error::chain;

/// How a [`QueuedNotifier`] retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries tried per notification (the first one included), at least 1.
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub first_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
    /// Notifications waiting at most; more are dropped.
    pub capacity: usize,
}

impl Default for RetryPolicy {
    /// 4 tries, 1 s then 2 s, 4 s apart (at most 30 s), 64 waiting.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            capacity: 64,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failed`-th failed try (1-based).
    fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A notifier that enqueues for `inner` (see the module docs). Cloning shares the queue;
/// the delivery task ends once every clone is dropped and the queue is empty.
#[derive(Clone, Debug)]
pub struct QueuedNotifier {
    tx: mpsc::Sender<Notification>,
    name: Arc<str>,
}

impl QueuedNotifier {
    /// Starts the delivery task of `inner` (named `name` in the log) on the current tokio
    /// runtime; call it from within one.
    pub fn spawn(name: impl Into<String>, inner: Arc<dyn Notifier>, policy: RetryPolicy) -> Self {
        let (tx, rx) = mpsc::channel(policy.capacity.max(1));
        let name: Arc<str> = Arc::from(name.into());
        tokio::spawn(deliver(rx, inner, policy, name.clone()));
        Self { tx, name }
    }
}

async fn deliver(
    mut rx: mpsc::Receiver<Notification>,
    inner: Arc<dyn Notifier>,
    policy: RetryPolicy,
    name: Arc<str>,
) {
    while let Some(n) = rx.recv().await {
        let attempts = policy.attempts.max(1);
        for attempt in 1..=attempts {
            match inner.notify(&n).await {
                Ok(()) => break,
                Err(NotifierError::Retryable(e)) if attempt < attempts => {
                    let wait = policy.backoff(attempt);
                    tracing::info!(notifier = %name, run_id = %n.run.id, kind = n.kind.as_str(), attempt, error = %chain(e.as_ref()), wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "notification not delivered; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(notifier = %name, run_id = %n.run.id, kind = n.kind.as_str(), attempt, error = %chain(&e), "notification given up");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Notifier for QueuedNotifier {
    /// Enqueues `n` and returns at once; `Retryable` when the queue is full (the notification
    /// is dropped), `Fatal` when the delivery task is gone.
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        match self.tx.try_send(n.clone()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(NotifierError::Retryable(
                format!(
                    "the queue of notifier {} is full: notification dropped",
                    self.name
                )
                .into(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(NotifierError::Fatal {
                detail: format!("the delivery task of notifier {} has stopped", self.name),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            capacity: 1,
        };
        let waits: Vec<u64> = (1..=5).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
    }
}
