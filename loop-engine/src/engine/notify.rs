//! The built-in notifiers of each run (`notify_webhook_url`, `notify_cmd`,
//! `notify_desktop`): every event the engine publishes is offered here; the few that concern
//! a person (run completed, failed or canceled, a usage-limit wait, an exhausted budget, a
//! review action) go through a bounded queue to one task, which reads the run's config and
//! hands the notification to a [`QueuedNotifier`] per target (retries with backoff there).
//! Offering never waits: a full queue drops the notification and says so in the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::backend::{Notification, NotificationKind, Notifier, Store};
use crate::config::Config;
use crate::domain::Event;
use crate::error::chain;
use crate::impls::notify::{
    CommandNotifier, DesktopNotifier, QueuedNotifier, RetryPolicy, WebhookNotifier,
};

/// Events waiting for the dispatching task at most.
const QUEUE: usize = 256;
/// Targets kept with their delivery tasks; past this many the map starts afresh (queued
/// notifications are still delivered by the old tasks).
const MAX_TARGETS: usize = 64;

/// What a notification is about, from the event's kind name (matched by name, for the kinds
/// other parts of the engine add: `USAGE_LIMIT_WAIT`, `REVIEW_ACTION`, `RUN_RETRIED`) and,
/// for a failed run, its exit reason.
pub(crate) fn classify(event: &Event) -> Option<NotificationKind> {
    let kind = event.kind.as_str();
    match kind {
        "RUN_COMPLETED" => Some(NotificationKind::RunCompleted),
        "RUN_CANCELED" => Some(NotificationKind::RunCanceled),
        "RUN_FAILED" => {
            let budget = event
                .payload
                .get("exit_reason")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|r| r.starts_with("budget_exhausted"));
            Some(if budget {
                NotificationKind::BudgetExhausted
            } else {
                NotificationKind::RunFailed
            })
        }
        "USAGE_LIMIT_WAIT" => Some(NotificationKind::UsageLimitWait),
        // A merge, scrap or pull request (`REVIEW_ACTION`), or a retry (`RUN_RETRIED`).
        "RUN_RETRIED" => Some(NotificationKind::ReviewAction),
        k if k.starts_with("REVIEW_") => Some(NotificationKind::ReviewAction),
        _ => None,
    }
}

/// One configured target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Target {
    Webhook(WebhookNotifier),
    Command(CommandNotifier),
    Desktop,
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "notify_webhook_url",
            Self::Command(_) => "notify_cmd",
            Self::Desktop => "notify_desktop",
        }
    }

    fn notifier(&self) -> Arc<dyn Notifier> {
        match self {
            Self::Webhook(w) => Arc::new(w.clone()),
            Self::Command(c) => Arc::new(c.clone()),
            Self::Desktop => Arc::new(DesktopNotifier::new()),
        }
    }
}

/// The targets a run's config turns on. A webhook URL that does not parse is logged and
/// skipped (creation refuses one, so only an old stored config can have it).
fn targets(cfg: &Config, run_id: &str) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(url) = cfg.notify_webhook_url.as_deref().filter(|u| !u.is_empty()) {
        match WebhookNotifier::new(url, cfg.notify_webhook_secret.as_deref()) {
            Ok(w) => out.push(Target::Webhook(w)),
            Err(e) => tracing::warn!(%run_id, error = %chain(&e), "notify_webhook_url skipped"),
        }
    }
    if let Some(cmd) = cfg.notify_cmd.as_deref().filter(|c| !c.trim().is_empty()) {
        let env = crate::process::parse_agent_env(cfg.agent_env.as_deref().unwrap_or_default())
            .map(|entries| crate::process::agent_env_vars(&entries))
            .unwrap_or_default();
        out.push(Target::Command(CommandNotifier::new(cmd, env)));
    }
    if cfg.notify_desktop {
        out.push(Target::Desktop);
    }
    out
}

/// The engine's side of the built-in notifiers (one per engine).
pub(crate) struct Notifications {
    store: Arc<dyn Store>,
    policy: RetryPolicy,
    tx: Mutex<Option<mpsc::Sender<Event>>>,
}

impl Notifications {
    pub(crate) fn new(store: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        Self {
            store,
            policy,
            tx: Mutex::new(None),
        }
    }

    /// Offers a published event: queued when it concerns a person, else ignored. Never
    /// waits; the dispatching task starts with the first such event.
    pub(crate) fn offer(&self, event: &Event) {
        if classify(event).is_none() {
            return;
        }
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.as_ref().is_none_or(mpsc::Sender::is_closed) {
            if tokio::runtime::Handle::try_current().is_err() {
                tracing::warn!(run_id = %event.run_id, "notification dropped: no async runtime");
                return;
            }
            let (sender, rx) = mpsc::channel(QUEUE);
            tokio::spawn(dispatch(rx, self.store.clone(), self.policy));
            *tx = Some(sender);
        }
        if let Some(sender) = tx.as_ref()
            && sender.try_send(event.clone()).is_err()
        {
            tracing::warn!(run_id = %event.run_id, kind = %event.kind, "notification queue full: notification dropped");
        }
    }
}

/// The dispatching task: the run's targets for each event, each behind its own queue.
async fn dispatch(mut rx: mpsc::Receiver<Event>, store: Arc<dyn Store>, policy: RetryPolicy) {
    let mut queues: HashMap<Target, QueuedNotifier> = HashMap::new();
    while let Some(event) = rx.recv().await {
        let Some(kind) = classify(&event) else {
            continue;
        };
        let run_id = event.run_id.to_string();
        let run = match store.get_run(event.run_id).await {
            Ok(run) => run,
            Err(e) => {
                tracing::warn!(%run_id, error = %chain(&e), "notification dropped: cannot read the run");
                continue;
            }
        };
        let cfg = match Config::from_json(&run.config) {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::warn!(%run_id, error = %chain(&e), "notification dropped: cannot read the run's config");
                continue;
            }
        };
        let wanted = targets(&cfg, &run_id);
        if wanted.is_empty() {
            continue;
        }
        let reason = run
            .failure
            .clone()
            .or_else(|| run.exit_reason.as_ref().map(ToString::to_string));
        let note = Notification {
            kind,
            run,
            reason,
            event: Some(event),
        };
        if queues.len() + wanted.len() > MAX_TARGETS {
            queues.clear();
        }
        for target in wanted {
            let queue = queues
                .entry(target.clone())
                .or_insert_with(|| QueuedNotifier::spawn(target.name(), target.notifier(), policy));
            if let Err(e) = queue.notify(&note).await {
                tracing::warn!(%run_id, notifier = target.name(), error = %chain(&e), "notification not queued");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventKind, RunId};

    fn event(kind: EventKind, payload: serde_json::Value) -> Event {
        Event {
            seq: 1,
            run_id: RunId::new(),
            step_id: None,
            kind,
            ts: 0,
            payload,
        }
    }

    #[test]
    fn only_what_concerns_a_person_is_notified() {
        let none = serde_json::json!({});
        assert_eq!(
            classify(&event(EventKind::RunCompleted, none.clone())),
            Some(NotificationKind::RunCompleted)
        );
        assert_eq!(
            classify(&event(EventKind::RunCanceled, none.clone())),
            Some(NotificationKind::RunCanceled)
        );
        assert_eq!(
            classify(&event(
                EventKind::RunFailed,
                serde_json::json!({"exit_reason": "claude_failed"})
            )),
            Some(NotificationKind::RunFailed)
        );
        assert_eq!(
            classify(&event(
                EventKind::RunFailed,
                serde_json::json!({"exit_reason": "budget_exhausted:cost"})
            )),
            Some(NotificationKind::BudgetExhausted)
        );
        assert_eq!(
            classify(&event(EventKind::UsageLimitWait, none.clone())),
            Some(NotificationKind::UsageLimitWait)
        );
        assert_eq!(
            classify(&event(EventKind::ReviewAction, none.clone())),
            Some(NotificationKind::ReviewAction)
        );
        assert_eq!(
            classify(&event(EventKind::RunRetried, none.clone())),
            Some(NotificationKind::ReviewAction)
        );
        for quiet in [
            EventKind::RunStarted,
            EventKind::StepStarted,
            EventKind::IterationEnd,
            EventKind::PostmortemEnd,
        ] {
            assert_eq!(classify(&event(quiet, none.clone())), None, "{quiet}");
        }
    }
}
