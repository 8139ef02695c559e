//! `notify_webhook_url`: each notification POSTed as JSON to an `http://` URL, signed with
//! HMAC-SHA256 when a secret is set. A small HTTP/1.1 client over a tokio TCP stream (one
//! request per connection, `Connection: close`): loop-engine knows no HTTP library, and a
//! webhook needs nothing more. `https://` is not spoken: for TLS endpoints, `notify_cmd` with
//! `curl` does it (README).

use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::notification_json;
use super::hmac::signature_header;
use crate::backend::{Notification, Notifier, NotifierError};

/// The header carrying the body's signature: `X-Loop-Signature: sha256=<hex>`, the
/// HMAC-SHA256 of the exact body bytes under `notify_webhook_secret`.
pub const SIGNATURE_HEADER: &str = "X-Loop-Signature";

/// How long one delivery (connect, send, the status line) may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of the answer that is read (its status line is all that counts).
const ANSWER_BYTES: usize = 8 * 1024;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    host: String,
    port: u16,
    path: String,
}

impl WebhookUrl {
    /// Parses `url`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https:// is not supported: give an http:// URL, or deliver through `notify_cmd` with curl".to_owned()
            } else {
                "expected an http://host[:port]/path URL".to_owned()
            }
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "an IPv6 host must end with `]`".to_owned())?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => 80,
                None => return Err(format!("unexpected `{after}` after the host")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p)?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the path must not contain spaces or control characters".into());
        }
        Ok(Self { host, port, path })
    }

    /// The value of the `Host` header.
    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("bad port `{p}`"))
}

/// Where the secret comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Secret {
    /// The value itself.
    Literal(String),
    /// `env:NAME`: read from this process's environment at each delivery.
    Env(String),
}

/// POSTs each notification's JSON ([`notification_json`]) to one URL, with
/// `Content-Type: application/json`, `X-Loop-Event: <kind>`, `X-Loop-Delivery: <id>` (the
/// same for every retry of one notification) and, with a secret, [`SIGNATURE_HEADER`]. A 2xx
/// answer is success; 408, 429, 5xx and connection failures are `Retryable`; any other
/// answer is `Fatal`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebhookNotifier {
    url: WebhookUrl,
    secret: Option<Secret>,
}

impl WebhookNotifier {
    /// A notifier for `url`; `secret` signs the body (`env:NAME` reads it from the
    /// environment variable `NAME` at each delivery).
    pub fn new(url: &str, secret: Option<&str>) -> Result<Self, NotifierError> {
        let url = WebhookUrl::parse(url).map_err(|why| NotifierError::Fatal {
            detail: format!("notify_webhook_url `{url}`: {why}"),
        })?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix("env:") {
                Some(name) => Secret::Env(name.to_owned()),
                None => Secret::Literal(s.to_owned()),
            });
        Ok(Self { url, secret })
    }

    fn secret(&self) -> Result<Option<Vec<u8>>, NotifierError> {
        match &self.secret {
            None => Ok(None),
            Some(Secret::Literal(s)) => Ok(Some(s.as_bytes().to_vec())),
            Some(Secret::Env(name)) => match std::env::var_os(name) {
                Some(v) if !v.is_empty() => Ok(Some(v.as_encoded_bytes().to_vec())),
                _ => Err(NotifierError::Fatal {
                    detail: format!(
                        "notify_webhook_secret names the environment variable `{name}`, which loopd's environment does not set"
                    ),
                }),
            },
        }
    }

    /// The whole request for `body`.
    fn request(&self, n: &Notification, body: &[u8]) -> Result<Vec<u8>, NotifierError> {
        let delivery = match &n.event {
            Some(e) => format!("{}-{}", e.run_id, e.seq),
            None => format!("{}-{}", n.run.id, n.kind.as_str()),
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: agent-loop/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Loop-Event: {}\r\nX-Loop-Delivery: {delivery}\r\nConnection: close\r\n",
            self.url.path,
            self.url.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len(),
            n.kind.as_str(),
        );
        if let Some(secret) = self.secret()? {
            head.push_str(&format!(
                "{SIGNATURE_HEADER}: {}\r\n",
                signature_header(&secret, body)
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        Ok(bytes)
    }

    async fn deliver(&self, request: &[u8]) -> Result<u16, String> {
        let addr = (self.url.host.as_str(), self.url.port);
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.url.host_header()))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("cannot send to {}: {e}", self.url.host_header()))?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < ANSWER_BYTES {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("no answer from {}: {e}", self.url.host_header()))?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&answer);
        let line = line.lines().next().unwrap_or_default();
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "{} answered no HTTP status line (got `{}`)",
                    self.url.host_header(),
                    line.chars().take(80).collect::<String>()
                )
            })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifierError> {
        let body = notification_json(n).to_string().into_bytes();
        let request = self.request(n, &body)?;
        let status = match tokio::time::timeout(TIMEOUT, self.deliver(&request)).await {
            Ok(Ok(status)) => status,
            Ok(Err(why)) => return Err(NotifierError::Retryable(why.into())),
            Err(_) => {
                return Err(NotifierError::Retryable(
                    format!(
                        "{} did not answer within {} s",
                        self.url.host_header(),
                        TIMEOUT.as_secs()
                    )
                    .into(),
                ));
            }
        };
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(NotifierError::Retryable(
                format!("{} answered {status}", self.url.host_header()).into(),
            )),
            other => Err(NotifierError::Fatal {
                detail: format!("{} answered {other}; not retried", self.url.host_header()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        let u = WebhookUrl::parse("http://127.0.0.1:8080/hooks/loop?x=1").expect("parses");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/loop?x=1")
        );
        let u = WebhookUrl::parse("http://example.test").expect("parses");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = WebhookUrl::parse("http://[::1]:9/x").expect("parses");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.host_header(), "[::1]:9");
        for (bad, says) in [
            ("https://example.test/", "https:// is not supported"),
            ("ftp://x/", "expected an http://"),
            ("http://:80/", "no host"),
            ("http://h:0/", "bad port"),
            ("http://h:99999/", "bad port"),
            ("http://u:p@h/", "credentials"),
            ("http://h/a b", "spaces"),
        ] {
            let err = WebhookUrl::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
