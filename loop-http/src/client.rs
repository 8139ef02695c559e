//! The typed client of the control plane, used by `loopctl` and the tests. One TCP connection
//! per request (`hyper::client::conn::http1`): the CLI makes a handful of calls, so a pool
//! would buy nothing. Only `http://` URLs: the daemon listens on loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loop_engine::domain::{RunId, StepId};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::api::{
    ArtifactList, ArtifactResource, CreatePrRequestBody, CreateRunRequest, CreatedRunResponse,
    DiffResponse, ErrorBody, Health, ListQuery, MergeRequestBody, PostmortemRequest,
    PostmortemResource, PromptResponse, PruneResponse, ReviewActionResponse, RunList, RunResource,
    StepList, StepResource, WorktreeList, WorktreeResource,
};
use crate::query;
use loop_engine::backend::DiffLimits;

/// `base` with `?workspace_root=` when one is given.
fn worktree_path(base: &str, workspace_root: Option<&std::path::Path>) -> String {
    match workspace_root {
        Some(w) => format!(
            "{base}?workspace_root={}",
            query::encode(&w.to_string_lossy())
        ),
        None => base.to_owned(),
    }
}

/// First delay of [`Client::wait_ready`]; it doubles after each failed probe.
const FIRST_PROBE_DELAY: Duration = Duration::from_millis(200);

/// Errors of the client. Each variant tells the user what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon could not be reached.
    #[error(
        "cannot reach the daemon at {addr} (is loopd running? start it with `loopd`; pass its token with --token or LOOPD_TOKEN)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The daemon refused the token.
    #[error(
        "the daemon at {addr} refused the request: {message}; pass the token with --token, the LOOPD_TOKEN environment variable, or the token file under the daemon's data dir"
    )]
    Unauthorized {
        /// The daemon's address.
        addr: String,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer could not be understood.
    #[error("unexpected answer from {addr}: {detail}")]
    Protocol {
        /// The daemon's address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// The base URL is not usable.
    #[error("invalid daemon URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    /// Path prefix of the API (empty, or `/something` without a trailing slash).
    prefix: String,
    token: Option<String>,
}

impl Client {
    /// A client of the daemon at `base_url` (`http://127.0.0.1:7700`), sending `token` as a
    /// bearer token when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = base_url
            .strip_prefix("http://")
            .ok_or_else(|| invalid("only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') || prefix.contains(['?', '#']) {
            return Err(invalid(
                "user info, queries and fragments are not supported",
            ));
        }
        let has_port = match authority.rfind(']') {
            Some(bracket) => authority[bracket..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        HeaderValue::from_str(&authority)
            .map_err(|_| invalid("the host has invalid characters"))?;
        Ok(Self {
            authority,
            prefix: prefix.to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The daemon's `host:port`.
    pub fn addr(&self) -> &str {
        &self.authority
    }

    fn protocol(&self, detail: impl Into<String>) -> ClientError {
        ClientError::Protocol {
            addr: self.authority.clone(),
            detail: detail.into(),
        }
    }

    /// Sends one request and returns the response if its status is a success.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        extra: &[(&'static str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|source| ClientError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(format!("handshake failed: {e}")))?;
        // The connection task drives the socket; it ends when the response body is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority);
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in extra {
            builder = builder.header(*name, value);
        }
        let req = match body {
            Some(b) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(b)).boxed()),
            None => builder.body(Empty::<Bytes>::new().boxed()),
        }
        .map_err(|e| self.protocol(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.protocol(format!("request failed: {e}")))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                "unknown".to_owned(),
                String::from_utf8_lossy(&bytes).trim().to_owned(),
            ),
        };
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                addr: self.authority.clone(),
                message,
            });
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn bytes(&self, resp: Response<Incoming>) -> Result<Bytes, ClientError> {
        resp.into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| self.protocol(format!("cannot read the answer: {e}")))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body, &[]).await?;
        let bytes = self.bytes(resp).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(format!("cannot parse the answer of {path}: {e}")))
    }

    fn json_body<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| self.protocol(format!("cannot encode: {e}")))
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/health", None).await
    }

    /// Probes `/health` with exponential backoff (200 ms, 400 ms, ...) until the daemon answers
    /// or `timeout` has passed; then returns the last error (naming the address).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Health, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = FIRST_PROBE_DELAY;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = match tokio::time::timeout(remaining, self.health()).await {
                Ok(r) => r,
                Err(_) => Err(ClientError::Connect {
                    addr: self.authority.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} ms", timeout.as_millis()),
                    ),
                }),
            };
            match attempt {
                Ok(h) => return Ok(h),
                Err(e @ (ClientError::Connect { .. } | ClientError::Protocol { .. })) => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = delay.saturating_mul(2);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /runs`.
    pub async fn create_run(
        &self,
        req: &CreateRunRequest,
    ) -> Result<CreatedRunResponse, ClientError> {
        let body = self.json_body(req)?;
        self.call(Method::POST, "/runs", Some(body)).await
    }

    /// `POST /prompt`.
    pub async fn prompt(&self, req: &CreateRunRequest) -> Result<PromptResponse, ClientError> {
        let body = self.json_body(req)?;
        self.call(Method::POST, "/prompt", Some(body)).await
    }

    /// `GET /runs`.
    pub async fn list_runs(&self, q: &ListQuery) -> Result<Vec<RunResource>, ClientError> {
        let mut params = Vec::new();
        if let Some(w) = &q.workspace_root {
            params.push(format!(
                "workspace_root={}",
                query::encode(&w.to_string_lossy())
            ));
        }
        if !q.statuses.is_empty() {
            let s: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
            params.push(format!("status={}", query::encode(&s.join(","))));
        }
        if let Some(l) = q.limit {
            params.push(format!("limit={l}"));
        }
        if let Some(b) = q.before {
            params.push(format!("before={b}"));
        }
        let path = if params.is_empty() {
            "/runs".to_owned()
        } else {
            format!("/runs?{}", params.join("&"))
        };
        let list: RunList = self.call(Method::GET, &path, None).await?;
        Ok(list.runs)
    }

    /// `GET /runs/{id}`.
    pub async fn get_run(&self, id: RunId) -> Result<RunResource, ClientError> {
        self.call(Method::GET, &format!("/runs/{id}"), None).await
    }

    /// `GET /runs/{id}/diff`, with the default size limits where `limits` leaves them out
    /// (`None` keeps the daemon's defaults).
    pub async fn diff(
        &self,
        id: RunId,
        limits: Option<DiffLimits>,
    ) -> Result<DiffResponse, ClientError> {
        let path = match limits {
            None => format!("/runs/{id}/diff"),
            Some(l) => format!(
                "/runs/{id}/diff?max_file_bytes={}&max_total_bytes={}&max_files={}&max_commits={}",
                l.max_file_bytes, l.max_total_bytes, l.max_files, l.max_commits
            ),
        };
        self.call(Method::GET, &path, None).await
    }

    /// `POST /runs/{id}/merge`.
    pub async fn merge(
        &self,
        id: RunId,
        req: &MergeRequestBody,
    ) -> Result<ReviewActionResponse, ClientError> {
        let body = self.json_body(req)?;
        self.call(Method::POST, &format!("/runs/{id}/merge"), Some(body))
            .await
    }

    /// `POST /runs/{id}/scrap`.
    pub async fn scrap(&self, id: RunId) -> Result<ReviewActionResponse, ClientError> {
        self.call(Method::POST, &format!("/runs/{id}/scrap"), None)
            .await
    }

    /// `POST /runs/{id}/create-pr`.
    pub async fn create_pr(
        &self,
        id: RunId,
        req: &CreatePrRequestBody,
    ) -> Result<ReviewActionResponse, ClientError> {
        let body = self.json_body(req)?;
        self.call(Method::POST, &format!("/runs/{id}/create-pr"), Some(body))
            .await
    }

    /// `POST /runs/{id}/retry`.
    pub async fn retry(&self, id: RunId) -> Result<RunResource, ClientError> {
        self.call(Method::POST, &format!("/runs/{id}/retry"), None)
            .await
    }

    /// `GET /worktrees` (of one workspace, or of all).
    pub async fn worktrees(
        &self,
        workspace_root: Option<&std::path::Path>,
    ) -> Result<Vec<WorktreeResource>, ClientError> {
        let list: WorktreeList = self
            .call(
                Method::GET,
                &worktree_path("/worktrees", workspace_root),
                None,
            )
            .await?;
        Ok(list.worktrees)
    }

    /// `POST /worktrees/prune` (of one workspace, or of all).
    pub async fn prune_worktrees(
        &self,
        workspace_root: Option<&std::path::Path>,
    ) -> Result<PruneResponse, ClientError> {
        self.call(
            Method::POST,
            &worktree_path("/worktrees/prune", workspace_root),
            None,
        )
        .await
    }

    /// `POST /runs/{id}/pause`.
    pub async fn pause(&self, id: RunId) -> Result<RunResource, ClientError> {
        self.call(Method::POST, &format!("/runs/{id}/pause"), None)
            .await
    }

    /// `POST /runs/{id}/resume`.
    pub async fn resume(&self, id: RunId) -> Result<RunResource, ClientError> {
        self.call(Method::POST, &format!("/runs/{id}/resume"), None)
            .await
    }

    /// `POST /runs/{id}/cancel`.
    pub async fn cancel(&self, id: RunId) -> Result<RunResource, ClientError> {
        self.call(Method::POST, &format!("/runs/{id}/cancel"), None)
            .await
    }

    /// `GET /runs/{id}/steps`.
    pub async fn steps(&self, id: RunId) -> Result<Vec<StepResource>, ClientError> {
        let list: StepList = self
            .call(Method::GET, &format!("/runs/{id}/steps"), None)
            .await?;
        Ok(list.steps)
    }

    /// `GET /runs/{id}/artifacts`.
    pub async fn artifacts(&self, id: RunId) -> Result<Vec<ArtifactResource>, ClientError> {
        let list: ArtifactList = self
            .call(Method::GET, &format!("/runs/{id}/artifacts"), None)
            .await?;
        Ok(list.artifacts)
    }

    /// `POST /runs/{id}/postmortem`: starts a postmortem (answered at once, `running: true`).
    pub async fn start_postmortem(
        &self,
        id: RunId,
        req: &PostmortemRequest,
    ) -> Result<PostmortemResource, ClientError> {
        let body = self.json_body(req)?;
        self.call(Method::POST, &format!("/runs/{id}/postmortem"), Some(body))
            .await
    }

    /// `GET /runs/{id}/postmortem`: the run's `analysis/` files.
    pub async fn postmortem(&self, id: RunId) -> Result<PostmortemResource, ClientError> {
        self.call(Method::GET, &format!("/runs/{id}/postmortem"), None)
            .await
    }

    /// `GET /runs/{id}/steps/{seq}/log`, whole.
    pub async fn step_log(&self, id: RunId, seq: u32) -> Result<Vec<u8>, ClientError> {
        let mut stream = self.step_log_stream(id, seq).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// `GET /runs/{id}/steps/{seq}/log`, chunk by chunk.
    pub async fn step_log_stream(&self, id: RunId, seq: u32) -> Result<ByteStream, ClientError> {
        let resp = self
            .send(
                Method::GET,
                &format!("/runs/{id}/steps/{seq}/log"),
                None,
                &[],
            )
            .await?;
        Ok(ByteStream {
            body: resp.into_body(),
            addr: self.authority.clone(),
        })
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self.send(Method::GET, "/metrics", None, &[]).await?;
        let bytes = self.bytes(resp).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /runs/{id}/events`: the run's events after `last_event_id` (all when `None`),
    /// then live ones until the run ends.
    pub async fn events(
        &self,
        id: RunId,
        last_event_id: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut extra = vec![(ACCEPT.as_str(), "text/event-stream".to_owned())];
        if let Some(last) = last_event_id {
            extra.push(("last-event-id", last.to_string()));
        }
        let resp = self
            .send(Method::GET, &format!("/runs/{id}/events"), None, &extra)
            .await?;
        Ok(EventStream {
            sse: SseReader::new(resp.into_body(), self.authority.clone()),
            last_event_id,
        })
    }

    /// `GET /runs/{id}/output`: the current step's output from its start, then live output
    /// until the run ends.
    pub async fn output(&self, id: RunId) -> Result<OutputStream, ClientError> {
        let extra = [(ACCEPT.as_str(), "text/event-stream".to_owned())];
        let resp = self
            .send(Method::GET, &format!("/runs/{id}/output"), None, &extra)
            .await?;
        Ok(OutputStream {
            sse: SseReader::new(resp.into_body(), self.authority.clone()),
        })
    }
}

/// A streamed response body.
#[derive(Debug)]
pub struct ByteStream {
    body: Incoming,
    addr: String,
}

impl ByteStream {
    /// The next chunk, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        detail: format!("the stream broke: {e}"),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// One server-sent event as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// `id:`.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental `text/event-stream` parser over a response body.
#[derive(Debug)]
struct SseReader {
    body: ByteStream,
    buf: Vec<u8>,
    /// Comment lines seen (keep-alives).
    comments: u64,
}

impl SseReader {
    fn new(body: Incoming, addr: String) -> Self {
        Self {
            body: ByteStream { body, addr },
            buf: Vec::new(),
            comments: 0,
        }
    }

    /// The next complete message, or `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<SseMessage>, ClientError> {
        let mut msg = SseMessage::default();
        let mut data: Option<String> = None;
        let mut has_fields = false;
        loop {
            while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if line.is_empty() {
                    if has_fields {
                        msg.data = data.take().unwrap_or_default();
                        if msg.event.is_empty() {
                            msg.event = "message".to_owned();
                        }
                        return Ok(Some(msg));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line.as_str(), ""),
                };
                has_fields = true;
                match field {
                    "id" => msg.id = Some(value.to_owned()),
                    "event" => msg.event = value.to_owned(),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
            match self.body.next().await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// An event of a run as streamed by `GET /runs/{id}/events`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiEvent {
    /// Per-run sequence number.
    pub seq: u64,
    /// Kind, e.g. `RUN_COMPLETED`.
    pub kind: String,
    /// The event as JSON (`seq`, `run_id`, `step_id`, `kind`, `ts`, `ts_ms`, `payload`).
    pub data: serde_json::Value,
}

/// The events of a run, as they come.
#[derive(Debug)]
pub struct EventStream {
    sse: SseReader,
    last_event_id: Option<u64>,
}

impl EventStream {
    /// The next event, or `None` when the stream ended (the run is over, the daemon stopped or
    /// dropped a slow reader: resume with [`EventStream::last_event_id`]).
    pub async fn next(&mut self) -> Result<Option<ApiEvent>, ClientError> {
        let Some(msg) = self.sse.next().await? else {
            return Ok(None);
        };
        let addr = self.sse.body.addr.clone();
        let bad = |detail: String| ClientError::Protocol {
            addr: addr.clone(),
            detail,
        };
        let seq = msg
            .id
            .as_deref()
            .and_then(|i| i.parse::<u64>().ok())
            .ok_or_else(|| bad(format!("event without a numeric id: {:?}", msg.id)))?;
        let data = serde_json::from_str(&msg.data)
            .map_err(|e| bad(format!("event {seq} has invalid JSON: {e}")))?;
        self.last_event_id = Some(seq);
        Ok(Some(ApiEvent {
            seq,
            kind: msg.event,
            data,
        }))
    }

    /// The id of the last event received (or the one the stream was opened after).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }

    /// Keep-alive comments received so far.
    pub fn keepalives(&self) -> u64 {
        self.sse.comments
    }
}

/// A piece of the live output stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputItem {
    /// Output of a new step follows.
    Step {
        /// The step.
        step_id: StepId,
    },
    /// Output text (lossy UTF-8).
    Chunk {
        /// The step that printed it.
        step_id: StepId,
        /// Byte offset in the step's log.
        offset: u64,
        /// The text.
        text: String,
    },
}

/// The live output of a run.
#[derive(Debug)]
pub struct OutputStream {
    sse: SseReader,
}

impl OutputStream {
    /// The next item, or `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<OutputItem>, ClientError> {
        loop {
            let Some(msg) = self.sse.next().await? else {
                return Ok(None);
            };
            let addr = self.sse.body.addr.clone();
            let bad = |detail: String| ClientError::Protocol {
                addr: addr.clone(),
                detail,
            };
            match msg.event.as_str() {
                "step" => {
                    let marker: crate::api::StepMarker = serde_json::from_str(&msg.data)
                        .map_err(|e| bad(format!("invalid step marker: {e}")))?;
                    return Ok(Some(OutputItem::Step {
                        step_id: marker.step_id,
                    }));
                }
                "output" => {
                    let id = msg.id.unwrap_or_default();
                    let (step, offset) = id
                        .split_once(':')
                        .ok_or_else(|| bad(format!("output id `{id}` is not <step>:<offset>")))?;
                    let step_id = step
                        .parse()
                        .map_err(|_| bad(format!("output id `{id}` has no step id")))?;
                    let offset = offset
                        .parse()
                        .map_err(|_| bad(format!("output id `{id}` has no offset")))?;
                    return Ok(Some(OutputItem::Chunk {
                        step_id,
                        offset,
                        text: msg.data,
                    }));
                }
                // Unknown kinds come from a newer server: skip them.
                _ => {}
            }
        }
    }

    /// Keep-alive comments received so far.
    pub fn keepalives(&self) -> u64 {
        self.sse.comments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_parsed() {
        let c = Client::new("http://127.0.0.1:7700", None).unwrap();
        assert_eq!(c.addr(), "127.0.0.1:7700");
        assert_eq!(c.prefix, "");
        let c = Client::new("http://localhost/api/", Some(String::new())).unwrap();
        assert_eq!(c.addr(), "localhost:80");
        assert_eq!(c.prefix, "/api");
        assert!(c.token.is_none());
        let c = Client::new("http://[::1]:9/", None).unwrap();
        assert_eq!(c.addr(), "[::1]:9");
        for bad in ["https://x:1", "127.0.0.1:7700", "http://", "http://u@h:1"] {
            let e = Client::new(bad, None).unwrap_err();
            assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn unauthorized_says_how_to_pass_the_token() {
        let e = ClientError::Unauthorized {
            addr: "127.0.0.1:7700".into(),
            message: "wrong bearer token".into(),
        };
        let text = e.to_string();
        for needle in ["--token", "LOOPD_TOKEN", "token file", "127.0.0.1:7700"] {
            assert!(text.contains(needle), "{text}");
        }
    }
}
