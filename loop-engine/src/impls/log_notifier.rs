//! The default `Notifier`: writes run notifications to the tracing log.

use async_trait::async_trait;

use crate::backend::{Notification, NotificationKind, Notifier, NotifierError};

/// Logs every notification through `tracing` (info for starts and completions, warn for
/// failures and cancels).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        let run = &n.run;
        let reason = n.reason.as_deref().unwrap_or("");
        match n.kind {
            NotificationKind::RunStarted => {
                tracing::info!(run_id = %run.id, name = %run.name, "run started");
            }
            NotificationKind::RunCompleted => {
                tracing::info!(run_id = %run.id, name = %run.name, %reason, "run completed");
            }
            NotificationKind::RunFailed => {
                tracing::warn!(run_id = %run.id, name = %run.name, %reason, "run failed");
            }
            NotificationKind::RunCanceled => {
                tracing::warn!(run_id = %run.id, name = %run.name, "run canceled");
            }
            other => {
                tracing::info!(run_id = %run.id, name = %run.name, kind = other.as_str(), %reason, "run notification");
            }
        }
        Ok(())
    }
}
