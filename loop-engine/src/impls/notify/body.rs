//! The JSON every built-in notifier sends: what happened, to which run, and the event behind
//! it. The run's configuration is left out (it may hold a webhook secret or `agent_env`
//! values).

use crate::backend::Notification;

/// The notification as the webhook's body and `notify_cmd`'s stdin:
/// `{kind, event, run_id, name, status, exit_reason, reason, tasks_done, tasks_total,
/// workspace_root, run_branch, merge_target_branch, ts, payload}`.
pub fn notification_json(n: &Notification) -> serde_json::Value {
    let run = &n.run;
    serde_json::json!({
        "kind": n.kind.as_str(),
        "event": n.event.as_ref().map(|e| e.kind.as_str()),
        "run_id": run.id,
        "name": run.name,
        "status": run.status,
        "exit_reason": run.exit_reason,
        "reason": n.reason,
        "tasks_done": run.tasks_done,
        "tasks_total": run.tasks_total,
        "workspace_root": run.workspace_root,
        "run_branch": run.run_branch,
        "merge_target_branch": run.merge_target_branch,
        "ts": n.event.as_ref().map(|e| e.ts),
        "payload": n.event.as_ref().map(|e| e.payload.clone()),
    })
}

/// A one-line summary for people (desktop notifications, logs).
pub(super) fn headline(n: &Notification) -> (String, String) {
    let run = &n.run;
    let what = match n.kind {
        crate::backend::NotificationKind::RunStarted => "started",
        crate::backend::NotificationKind::RunCompleted => "completed",
        crate::backend::NotificationKind::RunFailed => "failed",
        crate::backend::NotificationKind::RunCanceled => "was canceled",
        crate::backend::NotificationKind::UsageLimitWait => "waits for a usage limit",
        crate::backend::NotificationKind::BudgetExhausted => "ran out of budget",
        crate::backend::NotificationKind::ReviewAction => "was reviewed",
    };
    let title = format!("agent-loop: {} {what}", run.name);
    let mut body = format!("{}/{} tasks done", run.tasks_done, run.tasks_total);
    if let Some(reason) = &n.reason {
        body.push_str(&format!(" · {reason}"));
    }
    if let Some(e) = &n.event {
        body.push_str(&format!(" · {}", e.kind.as_str()));
    }
    (title, body)
}
