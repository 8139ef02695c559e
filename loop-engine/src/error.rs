//! Error types of loop-engine that are not tied to one backend trait (those live beside their
//! trait in `backend/`).

use std::path::PathBuf;

/// Where a configuration value came from; named in every config error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in default.
    Default,
    /// A `key=value` file (`.loop/config`, `--config FILE`, `LOOP_CONFIG`).
    File(PathBuf),
    /// An override from the command line or the HTTP API.
    Override,
    /// An already merged configuration (a stored run's config JSON, or a `Config` built in
    /// code), where the layer that supplied a value is no longer known.
    Effective,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("built-in defaults"),
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Override => f.write_str("command-line/API override"),
            Self::Effective => f.write_str("effective configuration"),
        }
    }
}

/// A configuration could not be loaded or is invalid. Every variant names what is wrong and
/// where it came from, so users can fix it without guessing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key has a value of the wrong kind (non-number, unknown mode, ...).
    #[error("invalid value `{value}` for config key `{key}` in {source_name}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The rejected value, as written.
        value: String,
        /// Where it came from.
        source_name: ConfigSource,
        /// What would be accepted.
        reason: String,
    },
    /// A line of a config file is not `key=value`.
    // The line itself is left out of the message: a config file given by path may be any
    // file (`config_file` over HTTP), and its contents must not be echoed back.
    #[error("{}:{line}: cannot parse config line: {reason}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An override names a key that does not exist.
    #[error("unknown config key `{key}` in {source_name}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it came from.
        source_name: ConfigSource,
    },
    /// A key that is optional on its own must be set because of another key's value.
    #[error("config key `{key}` must be set: {reason} (in {source_name})")]
    Missing {
        /// The key that is missing.
        key: String,
        /// Why it is required.
        reason: String,
        /// The source of the value that makes it required.
        source_name: ConfigSource,
    },
    /// A path given for `key` resolves (symlinks followed, `..` removed) outside the workspace
    /// (or the run's worktree) it must stay in.
    #[error("`{key}`: {} resolves to {}, outside the workspace {}", path.display(), resolved.display(), root.display())]
    OutsideRoot {
        /// The key or request field (`spec_path`, `log_dir`, `worktree_path_template`, ...).
        key: String,
        /// The path as given (or rendered).
        path: PathBuf,
        /// Where it really points.
        resolved: PathBuf,
        /// The folder it must stay in.
        root: PathBuf,
    },
    /// A file read when a run is created (config, prompt, spec, plan) is not usable: not a
    /// regular file, larger than its cap, or not text.
    #[error("`{key}`: cannot use {}: {reason}", path.display())]
    UnusableFile {
        /// The key or file role (`config_file`, `.loop/config`, `prompt_file`, `spec_path`, ...).
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec file does not exist.
    #[error("spec not found: `{given}` (looked at {})", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    SpecNotFound {
        /// The path as given.
        given: String,
        /// Every place that was tried.
        tried: Vec<PathBuf>,
    },
    /// The plan file does not exist.
    #[error("plan not found: {} (expected for spec {}; pass the plan path explicitly or create it)", expected.display(), spec.display())]
    PlanNotFound {
        /// The path that was expected.
        expected: PathBuf,
        /// The spec it belongs to.
        spec: PathBuf,
    },
}

/// Errors of the engine's public operations (create, pause, resume, cancel, queries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration is invalid; nothing was scheduled.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run (or step) does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `run 0190...`.
        what: String,
    },
    /// The request does not fit the run's current state (e.g. pausing a finished run).
    #[error("run {run_id}: {detail}")]
    InvalidState {
        /// The run.
        run_id: crate::domain::RunId,
        /// What is wrong.
        detail: String,
    },
    /// A request field is invalid.
    #[error("invalid `{field}`: {detail}")]
    InvalidInput {
        /// The field (`workspace_root`, `spec_path`, ...).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The store failed.
    #[error("store error")]
    Store(#[source] crate::backend::StoreError),
    /// Git failed.
    #[error("git error")]
    Vcs(#[from] crate::backend::VcsError),
    /// The engine is shutting down and accepts no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A merge a person asked for would conflict; nothing was changed.
    #[error("run {run_id}: {detail}")]
    MergeConflict {
        /// The run.
        run_id: crate::domain::RunId,
        /// The conflicting paths.
        paths: Vec<String>,
        /// What conflicts and what was left as it was.
        detail: String,
    },
    /// A program the request needs is not installed (e.g. `gh` for a pull request).
    #[error("{detail}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// What it is needed for and how to get it.
        detail: String,
    },
}

impl EngineError {
    /// A `NotFound` for a run id.
    pub fn run_not_found(id: crate::domain::RunId) -> Self {
        Self::NotFound {
            what: format!("run {id}"),
        }
    }
}

impl From<crate::backend::StoreError> for EngineError {
    fn from(e: crate::backend::StoreError) -> Self {
        match e {
            crate::backend::StoreError::NotFound { what } => Self::NotFound { what },
            other => Self::Store(other),
        }
    }
}

/// An error and its sources, joined by `": "` (`cannot merge: git failed: exit 128`): the one
/// formatter for error chains in logs, step reasons and API messages. A source whose text the
/// message already contains (an error that prints its cause itself) is not repeated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Layer {
                    text,
                    source: source.map(Box::new),
                })
            })
            .expect("at least one layer")
    }

    #[test]
    fn chain_joins_every_source() {
        assert_eq!(chain(&layers(&["a"])), "a");
        assert_eq!(
            chain(&layers(&["cannot merge", "git failed", "exit 128"])),
            "cannot merge: git failed: exit 128"
        );
    }

    #[test]
    fn chain_does_not_repeat_a_cause_the_message_already_shows() {
        assert_eq!(
            chain(&layers(&["store error: disk full", "disk full"])),
            "store error: disk full"
        );
        let io = std::io::Error::other("denied");
        let err = ConfigError::Io {
            path: PathBuf::from("/x/config"),
            source: io,
        };
        assert_eq!(chain(&err), "cannot read config file /x/config: denied");
    }
}
