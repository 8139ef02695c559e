//! The route table and its handlers: each request is authenticated, routed by method and path,
//! and answered with JSON (or a stream). Handlers run in their own task so a panic becomes a
//! 500 for that request instead of a dead connection or server.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use hyper::{Method, Request, Response, StatusCode};
use loop_engine::Engine;
use loop_engine::backend::RunFilter;
use loop_engine::domain::{Run, RunId, RunStatus};
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ArtifactList, ArtifactResource, CreateRunRequest, CreatedRunResponse, Health,
    PostmortemRequest, PostmortemResource, PromptResponse, RunList, RunResource, StepList,
    StepResource,
};
use crate::error::{ApiError, chain};
use crate::query;
use crate::server::ServerOptions;
use crate::server::auth::Guard;
use crate::server::body::{self, ChannelBody, RespBody};
use crate::server::review;
use crate::server::sse::{self, FRAME_CAPACITY, Sink, SseSettings};

/// Default `limit` of `GET /runs`.
const DEFAULT_LIMIT: u32 = 50;
/// Largest `limit` of `GET /runs`.
const MAX_LIMIT: u32 = 1000;
/// How long reading a request body may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes past the limit that are read and discarded so the client sees the 413 instead of a
/// reset connection.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// How long the health check waits for the store.
const HEALTH_STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// A streaming client whose buffer stays full this long is dropped.
const STALL: Duration = Duration::from_secs(5);
/// Bytes per chunk of a streamed log file.
const LOG_CHUNK: usize = 64 * 1024;

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) engine: Engine,
    pub(crate) guard: Guard,
    pub(crate) opts: ServerOptions,
    pub(crate) shutdown: CancellationToken,
    /// The dashboard's browser sessions.
    pub(crate) sessions: crate::dash::Sessions,
}

/// Answers one request. Never fails: errors become JSON answers, a panicking handler a 500.
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<RespBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let task = tokio::spawn(async move {
        match route(&state, req, peer).await {
            Ok(resp) => resp,
            Err(e) => body::error(&e),
        }
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(%method, path, panicked = e.is_panic(), error = %e, "request handler died");
            body::error(&ApiError::internal(
                "the request handler failed; the daemon log has the details",
            ))
        }
    }
}

fn allow(method: &Method, path: &str, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not allowed on {path} (allowed: {})",
                names.join(", ")
            ),
        ))
    }
}

pub(crate) fn parse_run_id(text: &str) -> Result<RunId, ApiError> {
    RunId::from_str(text).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_run_id",
            format!("`{text}` is not a valid run id (expected a UUID)"),
        )
    })
}

async fn route(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<RespBody>, ApiError> {
    let (parts, body) = req.into_parts();
    if crate::dash::owns(parts.uri.path()) {
        return Ok(crate::dash::handle(state, &parts, body).await);
    }
    let method = &parts.method;
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    if !crate::dash::api_session(state, method, &path, &parts.headers)? {
        state.guard.check(method, &path, &parts.headers, peer)?;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let engine = &state.engine;
    match segments.as_slice() {
        ["health"] => {
            allow(method, &path, &[Method::GET])?;
            Ok(health(engine).await)
        }
        ["metrics"] => {
            allow(method, &path, &[Method::GET])?;
            metrics(engine).await
        }
        ["prompt"] => {
            allow(method, &path, &[Method::POST])?;
            let req: CreateRunRequest =
                read_json(&parts.headers, body, state.opts.max_body_bytes).await?;
            let preview = engine.preview_prompt(&req.to_engine()).await?;
            Ok(body::json(
                StatusCode::OK,
                &PromptResponse {
                    implementation: preview.implementation,
                    reviewer: preview.reviewer,
                    warnings: preview.warnings,
                    agent: preview.agent,
                },
            ))
        }
        ["runs"] => {
            allow(method, &path, &[Method::GET, Method::POST])?;
            if method == Method::POST {
                let req: CreateRunRequest =
                    read_json(&parts.headers, body, state.opts.max_body_bytes).await?;
                let created = engine.create_run(req.to_engine()).await?;
                Ok(body::json(
                    StatusCode::CREATED,
                    &CreatedRunResponse {
                        run: RunResource::new(&created.run, None),
                        warnings: created.warnings,
                    },
                ))
            } else {
                let filter = list_filter(&query)?;
                let runs = engine.list_runs(&filter).await?;
                Ok(body::json(
                    StatusCode::OK,
                    &RunList {
                        runs: runs.iter().map(|r| RunResource::new(r, None)).collect(),
                    },
                ))
            }
        }
        ["runs", id] => {
            allow(method, &path, &[Method::GET])?;
            let run = engine.get_run(parse_run_id(id)?).await?;
            Ok(body::json(StatusCode::OK, &resource(engine, &run).await?))
        }
        ["runs", id, action @ ("pause" | "resume" | "cancel")] => {
            allow(method, &path, &[Method::POST])?;
            let id = parse_run_id(id)?;
            let run = match *action {
                "pause" => engine.pause(id).await?,
                "resume" => engine.resume(id).await?,
                _ => engine.cancel(id).await?,
            };
            Ok(body::json(StatusCode::OK, &resource(engine, &run).await?))
        }
        ["runs", id, "diff"] => {
            allow(method, &path, &[Method::GET])?;
            review::diff(engine, parse_run_id(id)?, &parse_query(&query)?).await
        }
        ["runs", id, "merge"] => {
            allow(method, &path, &[Method::POST])?;
            let id = parse_run_id(id)?;
            review::merge(engine, id, &parts.headers, body, state.opts.max_body_bytes).await
        }
        ["runs", id, "scrap"] => {
            allow(method, &path, &[Method::POST])?;
            review::scrap(engine, parse_run_id(id)?).await
        }
        ["runs", id, "create-pr"] => {
            allow(method, &path, &[Method::POST])?;
            let id = parse_run_id(id)?;
            review::create_pr(engine, id, &parts.headers, body, state.opts.max_body_bytes).await
        }
        ["runs", id, "retry"] => {
            allow(method, &path, &[Method::POST])?;
            review::retry(engine, parse_run_id(id)?).await
        }
        ["worktrees"] => {
            allow(method, &path, &[Method::GET])?;
            review::worktrees(engine, &parse_query(&query)?).await
        }
        ["worktrees", "prune"] => {
            allow(method, &path, &[Method::POST])?;
            review::prune(engine, &parse_query(&query)?).await
        }
        ["runs", id, "steps"] => {
            allow(method, &path, &[Method::GET])?;
            let steps = engine.steps(parse_run_id(id)?).await?;
            Ok(body::json(
                StatusCode::OK,
                &StepList {
                    steps: steps.iter().map(StepResource::from).collect(),
                },
            ))
        }
        ["runs", id, "artifacts"] => {
            allow(method, &path, &[Method::GET])?;
            let artifacts = engine.artifacts(parse_run_id(id)?).await?;
            Ok(body::json(
                StatusCode::OK,
                &ArtifactList {
                    artifacts: artifacts.iter().map(ArtifactResource::from).collect(),
                },
            ))
        }
        ["runs", id, "postmortem"] => {
            allow(method, &path, &[Method::GET, Method::POST])?;
            let id = parse_run_id(id)?;
            if method == Method::POST {
                let req: PostmortemRequest = if has_body(&parts.headers) {
                    read_json(&parts.headers, body, state.opts.max_body_bytes).await?
                } else {
                    PostmortemRequest::default()
                };
                engine.start_postmortem(id, req.to_engine()).await?;
                let listing = engine.postmortem_listing(id).await?;
                Ok(body::json(
                    StatusCode::ACCEPTED,
                    &PostmortemResource::from(listing),
                ))
            } else {
                let listing = engine.postmortem_listing(id).await?;
                Ok(body::json(
                    StatusCode::OK,
                    &PostmortemResource::from(listing),
                ))
            }
        }
        ["runs", id, "steps", seq, "log"] => {
            allow(method, &path, &[Method::GET])?;
            step_log(engine, parse_run_id(id)?, seq).await
        }
        ["runs", id, "events"] => {
            allow(method, &path, &[Method::GET])?;
            events(state, parse_run_id(id)?, &parts.headers, &query).await
        }
        ["runs", id, "output"] => {
            allow(method, &path, &[Method::GET])?;
            output(state, parse_run_id(id)?).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {method} {path}"),
        )),
    }
}

/// The resource of a run with its last step.
async fn resource(engine: &Engine, run: &Run) -> Result<RunResource, ApiError> {
    let steps = engine.steps(run.id).await?;
    let mut resource = RunResource::new(run, steps.last());
    resource.budget = Some(loop_engine::engine::BudgetStatus::of(
        run,
        &steps,
        loop_engine::domain::now_ms(),
    ));
    Ok(resource)
}

async fn health(engine: &Engine) -> Response<RespBody> {
    let problem =
        match tokio::time::timeout(HEALTH_STORE_TIMEOUT, engine.store().check_health()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("store check failed: {}", chain(&e))),
            Err(_) => Some(format!(
                "store check did not answer within {} ms",
                HEALTH_STORE_TIMEOUT.as_millis()
            )),
        };
    body::json(
        StatusCode::OK,
        &Health {
            status: if problem.is_some() { "degraded" } else { "ok" }.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            worker_id: engine.settings().worker_id.clone(),
            running: engine.running_runs().len(),
            containment: loop_engine::process::containment().as_str().to_owned(),
            fenced_writes_rejected: engine.metrics().fenced_writes_rejected,
            problem,
        },
    )
}

/// Prometheus text exposition of the engine's counters and the runs per status.
pub(crate) fn render_metrics(
    m: &loop_engine::engine::MetricsSnapshot,
    counts: &[(RunStatus, u64)],
) -> String {
    let mut out = String::new();
    let mut summary = |name: &str, help: &str, t: &loop_engine::engine::TimingSnapshot| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}\n",
            t.sum_ms, t.count
        ));
    };
    summary(
        "loop_run_duration_ms",
        "Duration of finished runs in milliseconds.",
        &m.run_duration,
    );
    summary(
        "loop_iteration_duration_ms",
        "Duration of agent steps in milliseconds.",
        &m.iteration_duration,
    );
    out.push_str(&format!(
        "# HELP loop_verification_total Verifications by result.\n# TYPE loop_verification_total counter\nloop_verification_total{{result=\"pass\"}} {}\nloop_verification_total{{result=\"fail\"}} {}\n",
        m.verification_pass, m.verification_fail
    ));
    out.push_str(&format!(
        "# HELP loop_watchdog_rewrite_total Watchdog prompt rewrites.\n# TYPE loop_watchdog_rewrite_total counter\nloop_watchdog_rewrite_total {}\n",
        m.watchdog_rewrites
    ));
    out.push_str(&format!(
        "# HELP loop_claude_retry_total Agent step retries.\n# TYPE loop_claude_retry_total counter\nloop_claude_retry_total {}\n",
        m.claude_retries
    ));
    out.push_str(&format!(
        "# HELP loop_fenced_writes_rejected_total Writes of this worker refused because another worker took their run over.\n# TYPE loop_fenced_writes_rejected_total counter\nloop_fenced_writes_rejected_total {}\n",
        m.fenced_writes_rejected
    ));
    out.push_str(&format!(
        "# HELP loop_leases_lost_total Runs this worker stopped because it lost their lease.\n# TYPE loop_leases_lost_total counter\nloop_leases_lost_total {}\n",
        m.leases_lost
    ));
    out.push_str("# HELP loop_runs Runs in the store by status.\n# TYPE loop_runs gauge\n");
    for status in RunStatus::ALL {
        let n: u64 = counts
            .iter()
            .filter(|(s, _)| s == status)
            .map(|(_, n)| n)
            .sum();
        out.push_str(&format!("loop_runs{{status=\"{status}\"}} {n}\n"));
    }
    out
}

async fn metrics(engine: &Engine) -> Result<Response<RespBody>, ApiError> {
    let counts = engine
        .store()
        .count_runs_by_status()
        .await
        .map_err(loop_engine::error::EngineError::from)?;
    let text = render_metrics(&engine.metrics(), &counts);
    Ok(body::with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        body::full(text),
    ))
}

/// The filter of `GET /runs` from its query string.
fn list_filter(query: &str) -> Result<RunFilter, ApiError> {
    let mut filter = RunFilter {
        limit: Some(DEFAULT_LIMIT),
        ..RunFilter::default()
    };
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "workspace_root" if !value.is_empty() => filter.workspace_root = Some(value.into()),
            "workspace_root" => {}
            "status" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let status = s.to_ascii_uppercase().parse::<RunStatus>().map_err(|_| {
                        let known: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                        ApiError::bad_request(format!(
                            "unknown status `{s}` (known: {})",
                            known.join(", ")
                        ))
                    })?;
                    filter.statuses.push(status);
                }
            }
            "limit" => {
                let n: u32 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{value}` is not a positive number"))
                })?;
                if n == 0 || n > MAX_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "limit {n} is out of range 1..={MAX_LIMIT}"
                    )));
                }
                filter.limit = Some(n);
            }
            "before" => filter.before = Some(parse_run_id(&value)?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (known: workspace_root, status, limit, before)"
                )));
            }
        }
    }
    Ok(filter)
}

/// The decoded pairs of a query string; bytes that are not UTF-8 are a 400.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query::parse(query)
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message))
}

/// True when a request says it has a body (a `Content-Type`, or a `Content-Length` above 0):
/// routes whose body is optional take their defaults without one.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    headers.contains_key(CONTENT_TYPE) || length.is_some_and(|n| n > 0)
}

/// Refuses a request body that is not declared as JSON (`Content-Type: application/json`,
/// parameters such as `charset=utf-8` allowed) with 415. Only routes that read a body check
/// it; body-less `POST`s (pause, resume, cancel) ignore both the type and any body.
pub(crate) fn require_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    let is_json = given.is_some_and(|v| {
        let essence = v.split(|b| *b == b';').next().unwrap_or_default();
        essence
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/json")
    });
    if is_json {
        return Ok(());
    }
    let message = match given {
        None => {
            "missing Content-Type: send the body as `Content-Type: application/json`".to_owned()
        }
        Some(v) => format!(
            "Content-Type `{}` is not accepted: send the body as `application/json`",
            String::from_utf8_lossy(v)
        ),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    ))
}

/// Reads a JSON body of at most `max` bytes. A larger body is drained (up to a bound) before
/// the 413, so the client reads the answer instead of a reset connection.
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<T, ApiError> {
    require_json_type(headers)?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(DRAIN_LIMIT)) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(BODY_TIMEOUT, collect_limited(body, max))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??
        .ok_or_else(too_large)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: {e}"),
        )
    })
}

/// The body of at most `max` bytes (413 past it), read within the body timeout.
pub(crate) async fn collect_body(body: Incoming, max: usize) -> Result<Bytes, ApiError> {
    tokio::time::timeout(BODY_TIMEOUT, collect_limited(body, max))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than the limit of {max} bytes"),
            )
        })
}

/// The body if it fits in `max` bytes, `None` if it does not (then the rest was drained).
async fn collect_limited(mut body: Incoming, max: usize) -> Result<Option<Bytes>, ApiError> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > max.saturating_add(DRAIN_LIMIT) {
                return Ok(None);
            }
            if total <= max {
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok((total <= max).then(|| Bytes::from(buf)))
}

async fn step_log(
    engine: &Engine,
    run_id: RunId,
    seq: &str,
) -> Result<Response<RespBody>, ApiError> {
    let seq: u32 = seq.parse().map_err(|_| {
        ApiError::bad_request(format!("step `{seq}` is not a step number of run {run_id}"))
    })?;
    let steps = engine.steps(run_id).await?;
    let step = steps
        .iter()
        .find(|s| s.seq == seq)
        .ok_or_else(|| ApiError::not_found(format!("run {run_id} has no step {seq}")))?;
    let path = step.output_path.clone().ok_or_else(|| {
        ApiError::not_found(format!(
            "step {seq} ({}) of run {run_id} has no output log",
            step.id
        ))
    })?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::not_found(format!(
            "the log of step {seq} ({}) of run {run_id} cannot be opened at {}: {e}",
            step.id,
            path.display()
        ))
    })?;
    let (tx, body) = ChannelBody::channel(4);
    tokio::spawn(async move {
        let mut buf = vec![0u8; LOG_CHUNK];
        loop {
            let item = match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send_timeout(item, STALL).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(body::with_type(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        body::stream(body),
    ))
}

fn sse_response(body: ChannelBody) -> Response<RespBody> {
    let mut resp = body::with_type(StatusCode::OK, "text/event-stream", body::stream(body));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    resp
}

fn sse_settings(state: &State) -> SseSettings {
    SseSettings {
        keepalive: state.opts.keepalive,
        shutdown: state.shutdown.clone(),
    }
}

/// `Last-Event-ID` (header) or `?after=`: the last event the client has.
fn resume_point(headers: &HeaderMap, query: &str) -> Result<u64, ApiError> {
    let given = match headers.get("last-event-id") {
        Some(v) => Some((
            "Last-Event-ID",
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )),
        None => parse_query(query)?
            .into_iter()
            .find(|(k, _)| k == "after")
            .map(|(_, v)| ("after", v)),
    };
    match given {
        None => Ok(0),
        Some((name, text)) => text.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("{name} `{text}` is not an event sequence number"))
        }),
    }
}

async fn events(
    state: &State,
    run_id: RunId,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response<RespBody>, ApiError> {
    let after = resume_point(headers, query)?;
    let engine = &state.engine;
    engine.get_run(run_id).await?;
    // Subscribe before reading the store: every event is then either stored already or
    // delivered live.
    let rx = engine.subscribe_events(run_id);
    let last = engine
        .store()
        .last_event_seq(run_id)
        .await
        .map_err(loop_engine::error::EngineError::from)?;
    if after > last {
        return Err(ApiError::bad_request(format!(
            "Last-Event-ID {after} is greater than the last event {last} of run {run_id}"
        )));
    }
    let (tx, body) = ChannelBody::channel(FRAME_CAPACITY);
    let sink = Sink::new(tx, STALL);
    tokio::spawn(sse::events(
        engine.clone(),
        run_id,
        after,
        rx,
        sink,
        sse_settings(state),
    ));
    Ok(sse_response(body))
}

async fn output(state: &State, run_id: RunId) -> Result<Response<RespBody>, ApiError> {
    let engine = &state.engine;
    engine.get_run(run_id).await?;
    let (rx, current) = engine.subscribe_output(run_id);
    let (tx, body) = ChannelBody::channel(FRAME_CAPACITY);
    let sink = Sink::new(tx, STALL);
    tokio::spawn(sse::output(
        engine.clone(),
        run_id,
        rx,
        current,
        sink,
        sse_settings(state),
    ));
    Ok(sse_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_filter_parses_and_validates() {
        let f = list_filter("").unwrap();
        assert_eq!(f.limit, Some(DEFAULT_LIMIT));
        let f = list_filter("status=pending,RUNNING&limit=5&workspace_root=%2Ftmp%2Fw").unwrap();
        assert_eq!(f.statuses, vec![RunStatus::Pending, RunStatus::Running]);
        assert_eq!(f.limit, Some(5));
        assert_eq!(f.workspace_root, Some("/tmp/w".into()));
        let e = list_filter("status=RUNNING,DONE").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("`DONE`"), "{}", e.message);
        assert!(list_filter("limit=1001").is_err());
        assert!(list_filter("limit=0").is_err());
        assert!(list_filter("limit=x").is_err());
        assert!(
            list_filter("colour=red")
                .unwrap_err()
                .message
                .contains("colour")
        );
        let e = list_filter("before=nope").unwrap_err();
        assert!(e.message.contains("`nope`"));
    }

    #[test]
    fn resume_point_reads_header_then_query() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_point(&h, "").unwrap(), 0);
        assert_eq!(resume_point(&h, "after=4").unwrap(), 4);
        h.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(resume_point(&h, "after=4").unwrap(), 7);
        h.insert("last-event-id", HeaderValue::from_static("abc"));
        let e = resume_point(&h, "").unwrap_err();
        assert!(e.message.contains("`abc`"));
    }

    #[test]
    fn metrics_list_every_status() {
        let m = loop_engine::engine::MetricsSnapshot::default();
        let text = render_metrics(&m, &[(RunStatus::Completed, 2)]);
        assert!(text.contains("loop_runs{status=\"COMPLETED\"} 2\n"));
        assert!(text.contains("loop_runs{status=\"PENDING\"} 0\n"));
        assert!(text.contains("loop_verification_total{result=\"fail\"} 0\n"));
        assert!(text.contains("loop_run_duration_ms_count 0\n"));
        assert!(text.contains("loop_claude_retry_total 0\n"));
        assert!(text.contains("loop_watchdog_rewrite_total 0\n"));
        assert!(text.contains("loop_iteration_duration_ms_sum 0\n"));
    }
}
