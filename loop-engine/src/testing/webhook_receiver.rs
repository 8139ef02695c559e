//! `WebhookReceiver`: a tiny HTTP/1.1 server on 127.0.0.1 for webhook tests. It records each
//! request (head and body), answers with the statuses it was given (then 200), or, as a
//! black hole, accepts connections and never answers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One received request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The request line, e.g. `POST /hook HTTP/1.1`.
    pub request_line: String,
    /// The headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<ReceivedRequest>,
    statuses: VecDeque<u16>,
}

/// The server; it stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// A server answering `statuses` in turn, then 200.
    pub async fn start(statuses: impl IntoIterator<Item = u16>) -> Self {
        Self::bind(statuses.into_iter().collect(), false).await
    }

    /// A server that accepts connections, reads the request and never answers.
    pub async fn black_hole() -> Self {
        Self::bind(VecDeque::new(), true).await
    }

    async fn bind(statuses: VecDeque<u16>, silent: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Mutex::new(Shared {
            received: Vec::new(),
            statuses,
        }));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    let status = {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.received.push(req);
                        s.statuses.pop_front().unwrap_or(200)
                    };
                    if silent {
                        // Hold the connection open, answering nothing.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .received
            .clone()
    }

    /// Waits (up to `timeout`) until `n` requests have come; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<ReceivedRequest> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || bytes.len() > 1 << 20 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Some(ReceivedRequest {
        request_line,
        headers,
        body,
    })
}
