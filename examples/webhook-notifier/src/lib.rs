//! webhook-notifier: a template `Notifier` that POSTs every run notification as JSON to an
//! `http://` URL (Slack-style incoming webhooks, a CI trigger, your own service).
//!
//! Copy it and change [`WebhookNotifier::body`] for your receiver's format. Delivery has a
//! timeout and one retry; failures are returned as `NotifierError`, which the engine logs and
//! otherwise ignores (a notifier can never fail a run).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use loop_engine::backend::{Notification, Notifier, NotifierError};

/// POSTs notifications to `http://host:port/path`.
#[derive(Clone, Debug)]
pub struct WebhookNotifier {
    host: String,
    port: u16,
    path: String,
    timeout: Duration,
}

impl WebhookNotifier {
    /// A notifier for `url` (`http://host[:port][/path]`).
    pub fn new(url: &str) -> Result<Self, NotifierError> {
        let bad = |why: &str| NotifierError::Fatal {
            detail: format!("webhook url `{url}`: {why}"),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            timeout: Duration::from_secs(5),
        })
    }

    /// The JSON sent for a notification: change this for your receiver.
    pub fn body(n: &Notification) -> serde_json::Value {
        serde_json::json!({
            "event": n.kind,
            "run_id": n.run.id,
            "name": n.run.name,
            "status": n.run.status,
            "exit_reason": n.run.exit_reason,
            "reason": n.reason,
            "tasks_done": n.run.tasks_done,
            "tasks_total": n.run.tasks_total,
            "run_branch": n.run.run_branch,
        })
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::post(&self.path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Drain the body so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {status}"))
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        let body = Bytes::from(Self::body(n).to_string());
        let mut last = String::new();
        for _ in 0..2 {
            match tokio::time::timeout(self.timeout, self.post(body.clone())).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {:?}", self.timeout),
            }
        }
        Err(NotifierError::Retryable(last.into()))
    }
}
