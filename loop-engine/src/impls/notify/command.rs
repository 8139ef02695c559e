//! `notify_cmd`: a shell command that gets each notification's JSON on stdin, through the
//! engine's subprocess door (its own process group, a timeout, the agents' allow-listed
//! environment: never `LOOPD_*`).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::body::notification_json;
use crate::backend::{Notification, Notifier, NotifierError};
use crate::process::Cmd;

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `sh -c <cmd>` per notification, in the run's workspace (or `/` when it is gone),
/// with the JSON ([`notification_json`]) on stdin and `LOOP_NOTIFY_KIND`,
/// `LOOP_NOTIFY_EVENT` and `LOOP_NOTIFY_RUN_ID` set. Exit 0 is success; anything else
/// (a timeout included) is `Retryable`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommandNotifier {
    cmd: String,
    env: Vec<(String, String)>,
}

impl CommandNotifier {
    /// A notifier running `cmd`, with `env` added to the allow-listed environment (the
    /// run's `agent_env`, say).
    pub fn new(cmd: impl Into<String>, env: Vec<(String, String)>) -> Self {
        Self {
            cmd: cmd.into(),
            env,
        }
    }
}

#[async_trait]
impl Notifier for CommandNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        let body = notification_json(n).to_string();
        let cwd = if n.run.workspace_root.is_dir() {
            n.run.workspace_root.clone()
        } else {
            PathBuf::from("/")
        };
        let out = Cmd::new("sh", &cwd)
            .args(["-c", &self.cmd])
            .allowed_env_only()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LOOP_NOTIFY_KIND", n.kind.as_str())
            .env(
                "LOOP_NOTIFY_EVENT",
                n.event.as_ref().map_or("", |e| e.kind.as_str()),
            )
            .env("LOOP_NOTIFY_RUN_ID", n.run.id.to_string())
            .stdin_bytes(body)
            .timeout(Some(TIMEOUT))
            .output()
            .await
            .map_err(|e| NotifierError::Retryable(Box::new(e)))?;
        if out.timed_out {
            return Err(NotifierError::Retryable(
                format!("notify_cmd `{}` ran past {} s", self.cmd, TIMEOUT.as_secs()).into(),
            ));
        }
        if !out.success() {
            return Err(NotifierError::Retryable(
                format!(
                    "notify_cmd `{}` exited {}: {}",
                    self.cmd,
                    out.code,
                    out.stderr_text().trim()
                )
                .into(),
            ));
        }
        Ok(())
    }
}
