//! The review routes (SPEC §12): a run's diff, the actions a person takes on a finished run
//! (merge, scrap, create-pr, retry) and the worktrees of all runs. Each handler turns the
//! request into one engine call; what is allowed when is the engine's decision.

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap};
use hyper::{Response, StatusCode};
use loop_engine::Engine;
use loop_engine::backend::DiffLimits;
use loop_engine::domain::RunId;
use loop_engine::engine::{MergeOptions, PrOptions, ReviewOutcome};
use serde::de::DeserializeOwned;

use crate::api::{
    CreatePrRequestBody, MergeRequestBody, PruneFailure, PruneResponse, ReviewActionResponse,
    RunResource, WorktreeList,
};
use crate::error::ApiError;
use crate::server::body::{self, RespBody};

/// The answer of an action: the run afterwards and what was done.
async fn outcome(engine: &Engine, done: ReviewOutcome) -> Result<Response<RespBody>, ApiError> {
    let steps = engine.steps(done.run.id).await?;
    Ok(body::json(
        StatusCode::OK,
        &ReviewActionResponse {
            run: RunResource::new(&done.run, steps.last()),
            details: done.details,
        },
    ))
}

/// A JSON body that may be left out entirely (no body, or an empty one, is `T::default()`).
async fn optional_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<T, ApiError> {
    let bytes = super::routes::collect_body(body, max).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if headers.get(CONTENT_TYPE).is_none() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "missing Content-Type: send the body as `Content-Type: application/json`",
        ));
    }
    super::routes::require_json_type(headers)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("invalid request body: {e}"),
        )
    })
}

/// `POST /runs/{id}/merge`.
pub(crate) async fn merge(
    engine: &Engine,
    id: RunId,
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<Response<RespBody>, ApiError> {
    let req: MergeRequestBody = optional_json(headers, body, max).await?;
    let done = engine
        .merge_run(
            id,
            MergeOptions {
                strategy: req.strategy,
                target: req.target,
            },
        )
        .await?;
    outcome(engine, done).await
}

/// `POST /runs/{id}/scrap`.
pub(crate) async fn scrap(engine: &Engine, id: RunId) -> Result<Response<RespBody>, ApiError> {
    let done = engine.scrap(id).await?;
    outcome(engine, done).await
}

/// `POST /runs/{id}/create-pr`.
pub(crate) async fn create_pr(
    engine: &Engine,
    id: RunId,
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<Response<RespBody>, ApiError> {
    let req: CreatePrRequestBody = optional_json(headers, body, max).await?;
    let done = engine
        .create_pr(
            id,
            PrOptions {
                title: req.title,
                body: req.body,
                draft: req.draft,
                base: req.base,
            },
        )
        .await?;
    outcome(engine, done).await
}

/// `POST /runs/{id}/retry`.
pub(crate) async fn retry(engine: &Engine, id: RunId) -> Result<Response<RespBody>, ApiError> {
    let run = engine.retry(id).await?;
    let steps = engine.steps(id).await?;
    Ok(body::json(
        StatusCode::OK,
        &RunResource::new(&run, steps.last()),
    ))
}

/// The limits of `GET /runs/{id}/diff` from `?max_file_bytes=&max_total_bytes=&max_files=&max_commits=`.
fn diff_limits(pairs: &[(String, String)]) -> Result<DiffLimits, ApiError> {
    let mut limits = DiffLimits::default();
    for (key, value) in pairs {
        let slot = match key.as_str() {
            "max_file_bytes" => &mut limits.max_file_bytes,
            "max_total_bytes" => &mut limits.max_total_bytes,
            "max_files" => &mut limits.max_files,
            "max_commits" => &mut limits.max_commits,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (known: max_file_bytes, max_total_bytes, max_files, max_commits)"
                )));
            }
        };
        *slot = value.parse().map_err(|_| {
            ApiError::bad_request(format!("{key} `{value}` is not a non-negative number"))
        })?;
    }
    Ok(limits.clamped())
}

/// `GET /runs/{id}/diff`.
pub(crate) async fn diff(
    engine: &Engine,
    id: RunId,
    pairs: &[(String, String)],
) -> Result<Response<RespBody>, ApiError> {
    let limits = diff_limits(pairs)?;
    let diff = engine.diff(id, limits).await?;
    Ok(body::json(StatusCode::OK, &diff))
}

/// The workspace of `?workspace_root=` (the only parameter of the worktree routes).
fn workspace(pairs: &[(String, String)]) -> Result<Option<std::path::PathBuf>, ApiError> {
    let mut workspace = None;
    for (key, value) in pairs {
        match key.as_str() {
            "workspace_root" if !value.is_empty() => workspace = Some(value.into()),
            "workspace_root" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (known: workspace_root)"
                )));
            }
        }
    }
    Ok(workspace)
}

/// `GET /worktrees`.
pub(crate) async fn worktrees(
    engine: &Engine,
    pairs: &[(String, String)],
) -> Result<Response<RespBody>, ApiError> {
    let worktrees = engine.worktrees(workspace(pairs)?).await?;
    Ok(body::json(StatusCode::OK, &WorktreeList { worktrees }))
}

/// `POST /worktrees/prune`.
pub(crate) async fn prune(
    engine: &Engine,
    pairs: &[(String, String)],
) -> Result<Response<RespBody>, ApiError> {
    let report = engine.prune_worktrees(workspace(pairs)?).await?;
    Ok(body::json(
        StatusCode::OK,
        &PruneResponse {
            removed: report.removed,
            failed: report
                .failed
                .into_iter()
                .map(|(worktree, error)| PruneFailure { worktree, error })
                .collect(),
        },
    ))
}
