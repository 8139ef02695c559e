//! The one place where failures become HTTP answers: an [`ApiError`] carries a status, a stable
//! `snake_case` code and a message, and renders as `{"error":{"code":..,"message":..}}`.
//! Engine errors are mapped here and nowhere else.

use hyper::StatusCode;
use loop_engine::error::{ConfigError, EngineError};

use crate::api::{ErrorBody, ErrorDetail};

/// An error answer of the control plane.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable `snake_case` code.
    pub code: &'static str,
    /// What is wrong, naming the offending value.
    pub message: String,
    /// The conflicting paths of a refused merge.
    pub paths: Vec<String>,
}

impl ApiError {
    /// An error with the given parts.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            paths: Vec::new(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                paths: self.paths.clone(),
            },
        }
    }
}

/// `e` and its sources, joined with `: ` (the engine's one error-chain formatter).
pub(crate) use loop_engine::error::chain;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = chain(&e);
        match &e {
            EngineError::Config(c) => {
                let code = match c {
                    ConfigError::SpecNotFound { .. } => "spec_not_found",
                    ConfigError::PlanNotFound { .. } => "plan_not_found",
                    _ => "invalid_config",
                };
                Self::new(StatusCode::BAD_REQUEST, code, message)
            }
            EngineError::NotFound { .. } => Self::not_found(message),
            EngineError::InvalidState { .. } => {
                Self::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            EngineError::InvalidInput { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            EngineError::MergeConflict { paths, .. } => {
                let mut api = Self::new(StatusCode::CONFLICT, "merge_conflict", message);
                api.paths = paths.clone();
                api
            }
            EngineError::ToolMissing { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "tool_missing", message)
            }
            EngineError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            EngineError::Store(_) => {
                tracing::error!(error = %message, "store error while serving a request");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message)
            }
            EngineError::Vcs(loop_engine::backend::VcsError::Conflict { .. }) => {
                Self::new(StatusCode::CONFLICT, "vcs_conflict", message)
            }
            EngineError::Vcs(loop_engine::backend::VcsError::NotFound { .. }) => {
                Self::not_found(message)
            }
            EngineError::Vcs(_) => {
                tracing::error!(error = %message, "git error while serving a request");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "vcs_error", message)
            }
            _ => {
                tracing::error!(error = %message, "engine error while serving a request");
                Self::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_engine::backend::StoreError;
    use loop_engine::domain::RunId;
    use loop_engine::error::ConfigSource;

    #[test]
    fn engine_errors_map_to_statuses() {
        let id = RunId::new();
        let cases: Vec<(EngineError, StatusCode, &str)> = vec![
            (
                EngineError::run_not_found(id),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                EngineError::InvalidState {
                    run_id: id,
                    detail: "cannot pause a run that is COMPLETED".into(),
                },
                StatusCode::CONFLICT,
                "invalid_state",
            ),
            (
                EngineError::InvalidInput {
                    field: "spec_path".into(),
                    detail: "outside".into(),
                },
                StatusCode::BAD_REQUEST,
                "invalid_input",
            ),
            (
                EngineError::Config(ConfigError::InvalidValue {
                    key: "iterations".into(),
                    value: "lots".into(),
                    source_name: ConfigSource::Override,
                    reason: "expected a number".into(),
                }),
                StatusCode::BAD_REQUEST,
                "invalid_config",
            ),
            (
                EngineError::ShuttingDown,
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
            ),
            (
                EngineError::Store(StoreError::Fatal("disk full".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status, api.code), (status, code), "{api}");
        }
    }

    #[test]
    fn a_refused_merge_names_its_paths_and_a_missing_tool_is_503() {
        let id = RunId::new();
        let api = ApiError::from(EngineError::MergeConflict {
            run_id: id,
            paths: vec!["README.md".into(), "src/lib.rs".into()],
            detail: "merging run/a into main conflicts in README.md, src/lib.rs".into(),
        });
        assert_eq!(
            (api.status, api.code),
            (StatusCode::CONFLICT, "merge_conflict")
        );
        let body = serde_json::to_value(api.body()).unwrap();
        assert_eq!(
            body["error"]["paths"],
            serde_json::json!(["README.md", "src/lib.rs"])
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&id.to_string())
        );
        let api = ApiError::from(EngineError::ToolMissing {
            tool: "gh".into(),
            detail: "the GitHub CLI `gh` is not installed".into(),
        });
        assert_eq!(
            (api.status, api.code),
            (StatusCode::SERVICE_UNAVAILABLE, "tool_missing")
        );
        // Other errors carry no `paths` key at all.
        let body = serde_json::to_value(ApiError::not_found("x").body()).unwrap();
        assert!(body["error"].get("paths").is_none());
    }

    #[test]
    fn messages_carry_the_source_chain_and_names() {
        let id = RunId::new();
        let api = ApiError::from(EngineError::InvalidState {
            run_id: id,
            detail: "cannot pause a run that is COMPLETED".into(),
        });
        assert!(api.message.contains(&id.to_string()));
        assert!(api.message.contains("COMPLETED"));
        let api = ApiError::from(EngineError::Store(StoreError::Fatal("disk full".into())));
        assert_eq!(api.message, "store error: store failed: disk full");
        let body = serde_json::to_value(api.body()).unwrap();
        assert_eq!(body["error"]["code"], "store_error");
    }
}
