//! The HTTP server: hyper 1 over HTTP/1.1 on a loopback port, answering `POST /v1/messages`
//! from the [`Script`] and recording every request it receives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::plan_agent::{self, Role};
use crate::reply::{self, Content};
use crate::request::MessagesRequest;
use crate::script::{Script, ToolCall, Turn};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// One request the server received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// For `POST /v1/messages`: its 1-based number among those requests.
    pub number: Option<usize>,
    /// The HTTP method.
    pub method: String,
    /// The path with its query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// The headers, names lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
    /// How the server answered, e.g. `plan_agent`, `error 529`, `continuation`, `404`.
    pub answer: String,
}

impl RecordedRequest {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a Messages request, when it is JSON (Responses and Gemini requests are
    /// translated into that shape).
    pub fn messages(&self) -> Option<MessagesRequest> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        let route = self.path.split('?').next().unwrap_or_default();
        if route == "/v1/responses" {
            return Some(MessagesRequest::new(crate::openai::to_messages(&body)));
        }
        if let Some((model, method)) = route
            .strip_prefix("/v1beta/models/")
            .and_then(|t| t.split_once(':'))
        {
            let stream = method == "streamGenerateContent";
            return Some(MessagesRequest::new(crate::gemini::to_messages(
                model, stream, &body,
            )));
        }
        Some(MessagesRequest::new(body))
    }
}

/// What answers a tool result the server asked for.
#[derive(Clone, Debug)]
enum Continuation {
    /// A fixed final text.
    Text(String),
    /// The plan agent's final sentence, built from the command's output.
    Plan(Role),
}

#[derive(Debug, Default)]
struct State {
    script: Script,
    messages_count: usize,
    requests: Vec<RecordedRequest>,
    /// Tool-use id -> what answers its result.
    continuations: HashMap<String, Continuation>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running scripted model server. Dropping it stops the server.
#[derive(Debug)]
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ModelServer {
    /// Binds `127.0.0.1:0` and serves `script`. Must be called inside a tokio runtime.
    pub fn start(script: Script) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script)
    }

    /// Binds `addr` and serves `script`. Must be called inside a tokio runtime.
    pub fn start_on(addr: SocketAddr, script: Script) -> io::Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("no tokio runtime: {e}")))?;
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _guard = handle.enter();
            TcpListener::from_std(std_listener)?
        };
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script,
                ..State::default()
            }),
            shutdown,
        });
        let task = handle.spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The `POST /v1/messages` requests received so far.
    pub fn messages_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.number.is_some())
            .collect()
    }

    /// Turns still queued in the script.
    pub fn turns_left(&self) -> usize {
        self.shared.lock().script.turns.len()
    }

    /// Stops accepting, closes every open connection (stalled ones too) and waits for the
    /// server task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    // Dropping the set at the end aborts every connection still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, shared.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// The 429 of an exhausted usage limit, resetting `reset_in_sec` seconds from now (see
/// [`Turn::UsageLimit`]).
fn usage_limit(reset_in_sec: u64) -> Response<Body> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let reset = now.saturating_add(reset_in_sec);
    let rfc3339 = reply::rfc3339(reset);
    let body = serde_json::json!({
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "This request would exceed your account's rate limit. Please try again later."
        }
    });
    let mut res = json_response(429, &body);
    let headers = res.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("retry-after", reset_in_sec.to_string());
    put("anthropic-ratelimit-requests-reset", rfc3339.clone());
    put("anthropic-ratelimit-tokens-reset", rfc3339.clone());
    put("anthropic-ratelimit-input-tokens-reset", rfc3339.clone());
    put("anthropic-ratelimit-output-tokens-reset", rfc3339);
    put("anthropic-ratelimit-unified-status", "rejected".into());
    put("anthropic-ratelimit-unified-reset", reset.to_string());
    put("anthropic-ratelimit-unified-5h-status", "rejected".into());
    put("anthropic-ratelimit-unified-5h-reset", reset.to_string());
    put(
        "anthropic-ratelimit-unified-representative-claim",
        "five_hour".into(),
    );
    put("request-id", "req_scripted_usage_limit".into());
    res
}

pub(crate) fn json_response(status: u16, value: &Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let route = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut record = RecordedRequest {
        number: None,
        method: method.to_string(),
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        answer: String::new(),
    };
    let (response, answer) = match (&method, route.as_str()) {
        (&Method::POST, "/v1/messages") => messages(&shared, &body, &mut record),
        (&Method::POST, "/v1/responses") => crate::openai::responses(&shared, &body, &mut record),
        (&Method::POST, p) if p.starts_with("/v1beta/models/") || p.starts_with("/v1/models/") => {
            crate::gemini::generate(&shared, p, &body, &mut record)
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            let tokens = serde_json::from_slice(&body)
                .map_or(1, |v| MessagesRequest::new(v).estimated_input_tokens());
            (
                json_response(200, &json!({"input_tokens": tokens})),
                "count_tokens".to_owned(),
            )
        }
        (&Method::GET, "/v1/models") => (
            json_response(
                200,
                &json!({"data": [{"type": "model", "id": "claude-scripted", "display_name": "Scripted model"}],
                        "has_more": false, "first_id": "claude-scripted", "last_id": "claude-scripted"}),
            ),
            "models".to_owned(),
        ),
        (&Method::HEAD | &Method::GET, "/") => {
            (Response::new(Empty::new().boxed()), "health".to_owned())
        }
        // Telemetry and other start-up calls of the CLI: accept and ignore.
        (_, p) if p.starts_with("/api/") => (json_response(200, &json!({})), "ignored".to_owned()),
        _ => (
            json_response(404, &reply::error_body(404)),
            "404".to_owned(),
        ),
    };
    record.answer = answer;
    shared.lock().requests.push(record);
    Ok(response)
}

/// Answers one `POST /v1/messages`.
fn messages(
    shared: &Arc<Shared>,
    body: &[u8],
    record: &mut RecordedRequest,
) -> (Response<Body>, String) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (
            json_response(
                400,
                &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "body is not JSON"}}),
            ),
            "400".to_owned(),
        );
    };
    let req = MessagesRequest::new(value);
    let (number, answer, label) = decide(shared, &req);
    record.number = Some(number);
    let id = format!("msg_sm_{number}");
    (respond(shared, &req, &id, answer), label)
}

/// Numbers a model request and decides its answer: the continuation of a tool call the
/// script made, else the script's next turn. Every API dialect asks this with its request
/// translated into the Messages shape.
pub(crate) fn decide(shared: &Arc<Shared>, req: &MessagesRequest) -> (usize, Answer, String) {
    {
        let mut state = shared.lock();
        state.messages_count += 1;
        let number = state.messages_count;
        let continuation = req
            .tool_results()
            .iter()
            .find_map(|r| state.continuations.remove(&r.tool_use_id));
        let (answer, label) = match continuation {
            Some(c) => (continue_with(c, req), "continuation".to_owned()),
            None => {
                let turn = state.script.next_turn(number, req);
                let label = turn.describe();
                (expand(turn, number, req, &mut state.continuations), label)
            }
        };
        (number, answer, label)
    }
}

/// A turn made concrete for one request.
#[derive(Debug)]
pub(crate) enum Answer {
    Content(Content),
    Slow(Content, Duration),
    Error {
        status: u16,
        body: Value,
        retry_after: Option<u64>,
    },
    UsageLimit {
        reset_in_sec: u64,
    },
    Stall,
}

fn continue_with(c: Continuation, req: &MessagesRequest) -> Answer {
    let results = req.tool_results();
    let text = match c {
        Continuation::Text(t) => t,
        Continuation::Plan(role) => {
            let output: Vec<&str> = results.iter().map(|r| r.text.as_str()).collect();
            let failed = results.iter().any(|r| r.is_error);
            plan_agent::final_answer(role, &output.join("\n"), failed)
        }
    };
    Answer::Content(Content::text(text))
}

fn expand(
    turn: Turn,
    number: usize,
    req: &MessagesRequest,
    continuations: &mut HashMap<String, Continuation>,
) -> Answer {
    let tool_id = |k: usize| format!("toolu_sm_{number}_{k}");
    let plan_call = |role: Role, fix: &str, continuations: &mut HashMap<String, Continuation>| {
        let Some(plan) = req.plan_path() else {
            return Answer::Content(Content::text(
                "I cannot find the plan: the prompt names no @path.",
            ));
        };
        let id = tool_id(1);
        continuations.insert(id.clone(), Continuation::Plan(role));
        Answer::Content(Content::Tools(vec![(
            id,
            ToolCall::bash(plan_agent::command(role, &plan, fix)),
        )]))
    };
    match turn {
        Turn::Text(t) => Answer::Content(Content::text(t)),
        Turn::ToolUse { calls, then } => {
            let then = then.unwrap_or_else(|| format!("Ran {} tool call(s).", calls.len()));
            let calls: Vec<(String, ToolCall)> = calls
                .into_iter()
                .enumerate()
                .map(|(k, c)| (tool_id(k + 1), c))
                .collect();
            for (id, _) in &calls {
                continuations.insert(id.clone(), Continuation::Text(then.clone()));
            }
            Answer::Content(Content::Tools(calls))
        }
        Turn::Error {
            status,
            body,
            retry_after,
        } => Answer::Error {
            status,
            body: body.unwrap_or_else(|| reply::error_body(status)),
            retry_after,
        },
        Turn::UsageLimit { reset_in_sec } => Answer::UsageLimit { reset_in_sec },
        Turn::Slow { chunks, delay } => Answer::Slow(Content::Text(chunks), delay),
        Turn::Stall => Answer::Stall,
        Turn::PlanAgent => {
            let role = if req.is_reviewer() {
                Role::Review
            } else {
                Role::Implement
            };
            plan_call(role, "", continuations)
        }
        Turn::FixVerification { script } => plan_call(Role::Fix, &script, continuations),
    }
}

fn respond(
    shared: &Arc<Shared>,
    req: &MessagesRequest,
    id: &str,
    answer: Answer,
) -> Response<Body> {
    let model = req.model().to_owned();
    let input_tokens = req.estimated_input_tokens();
    let (content, delay) = match answer {
        Answer::Error {
            status,
            body,
            retry_after,
        } => {
            let mut res = json_response(status, &body);
            if let Some(secs) = retry_after {
                res.headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            return res;
        }
        Answer::UsageLimit { reset_in_sec } => return usage_limit(reset_in_sec),
        Answer::Stall => {
            return stall(
                shared,
                req.stream()
                    .then(|| reply::message_start(id, &model, input_tokens)),
            );
        }
        Answer::Content(c) => (c, Duration::ZERO),
        Answer::Slow(c, d) => (c, d),
    };
    if !req.stream() {
        let message = reply::message(id, &model, &content, input_tokens);
        if delay.is_zero() {
            return json_response(200, &message);
        }
        // A slow non-streamed answer: the body arrives after all the pauses.
        let pauses = match &content {
            Content::Text(pieces) => u32::try_from(pieces.len()).unwrap_or(u32::MAX),
            Content::Tools(_) => 1,
        };
        let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
        tokio::spawn(async move {
            tokio::time::sleep(delay * pauses).await;
            let _ = tx.send_data(Bytes::from(message.to_string())).await;
        });
        let mut res = Response::new(body.boxed());
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return res;
    }
    let start = reply::message_start(id, &model, input_tokens);
    let events = reply::content_events(&content);
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(events.len() + 1);
    tokio::spawn(async move {
        if tx.send_data(start).await.is_err() {
            return;
        }
        for ev in events {
            // Only the text deltas of a slow answer are paced.
            if !delay.is_zero() && is_text_delta(&ev) {
                tokio::time::sleep(delay).await;
            }
            if tx.send_data(ev).await.is_err() {
                return;
            }
        }
    });
    sse_response(body.boxed())
}

fn is_text_delta(event: &Bytes) -> bool {
    event.starts_with(b"event: content_block_delta")
        && event.windows(12).any(|w| w == b"\"text_delta\"")
}

pub(crate) fn sse_response(body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    res
}

/// Sends `first` (if any), then nothing until the server shuts down.
pub(crate) fn stall(shared: &Arc<Shared>, first: Option<Bytes>) -> Response<Body> {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    let mut shutdown = shared.shutdown.clone();
    let streaming = first.is_some();
    tokio::spawn(async move {
        if let Some(first) = first
            && tx.send_data(first).await.is_err()
        {
            return;
        }
        // Holding `tx` keeps the body open; the client gets no more bytes.
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        drop(tx);
    });
    if streaming {
        sse_response(body.boxed())
    } else {
        let mut res = Response::new(body.boxed());
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }
}
