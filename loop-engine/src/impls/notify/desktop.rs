//! `notify_desktop`: a desktop notification through `notify-send` (libnotify) when it is on
//! `PATH`; without it, nothing happens (said once in the log).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::body::headline;
use crate::backend::{Notification, NotificationKind, Notifier, NotifierError};
use crate::process::Cmd;

/// How long `notify-send` may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The desktop session's variables `notify-send` needs to reach the notification daemon.
const SESSION_VARS: &[&str] = &["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"];

/// Set once the missing `notify-send` has been logged.
static SAID_MISSING: AtomicBool = AtomicBool::new(false);

/// Shows each notification with `notify-send --app-name=agent-loop <title> <body>`
/// (critical urgency for failures). `notify-send` is looked up on `PATH` at each call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DesktopNotifier;

impl DesktopNotifier {
    /// A desktop notifier.
    pub fn new() -> Self {
        Self
    }
}

/// `notify-send` on this process's `PATH`, if there.
fn find_notify_send() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("notify-send"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[async_trait]
impl Notifier for DesktopNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        let Some(program) = find_notify_send() else {
            if !SAID_MISSING.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "notify_desktop: notify-send is not on PATH; desktop notifications are skipped"
                );
            }
            return Ok(());
        };
        let (title, body) = headline(n);
        let urgency = match n.kind {
            NotificationKind::RunFailed
            | NotificationKind::BudgetExhausted
            | NotificationKind::UsageLimitWait => "critical",
            _ => "normal",
        };
        let mut cmd = Cmd::new(&program, "/")
            .args([
                "--app-name=agent-loop",
                &format!("--urgency={urgency}"),
                &title,
                &body,
            ])
            .allowed_env_only()
            .timeout(Some(TIMEOUT));
        for var in SESSION_VARS {
            if let Some(value) = std::env::var_os(var) {
                cmd = cmd.env(var, value);
            }
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| NotifierError::Retryable(Box::new(e)))?;
        if out.success() {
            Ok(())
        } else {
            Err(NotifierError::Retryable(
                format!(
                    "notify-send exited {}: {}",
                    out.code,
                    out.stderr_text().trim()
                )
                .into(),
            ))
        }
    }
}
