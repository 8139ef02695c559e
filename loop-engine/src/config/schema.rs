//! The typed configuration: [`Config`] with its defaults (SPEC §8), the rules that span
//! several keys, and the JSON form stored with every run.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};

use super::keys::{key_spec, value_from_json};
use super::layers::{Layer, map_figment_error};
use crate::backend::QueueOrder;
use crate::completion::CompletionMode;
use crate::domain::{MergeStrategy, NameSource, spelled_enum};
use crate::error::{ConfigError, ConfigSource};

spelled_enum!(
    /// Which agent runs the steps of a run.
    ExecutorKind {
        /// The Claude Code CLI (`claude_bin`).
        Claude => "claude",
        /// Any agent CLI, started from the `agent_cmd` template.
        Command => "command",
        /// The built-in simulated agent: works the plan without any model (demos, rehearsals).
        Simulate => "simulate",
    }
);

spelled_enum!(
    /// Where run artifacts are written.
    ArtifactMode {
        /// In the workspace's `log_dir`, copied under `global_log_dir` too.
        Mirror => "mirror",
        /// In the workspace's `log_dir` only.
        Workspace => "workspace",
    }
);

/// The effective configuration of a run (SPEC §8). Field names are the config keys; see
/// [`KEY_SPECS`](super::KEY_SPECS) for a description of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Folder of spec files, relative to the workspace root.
    pub specs_dir: PathBuf,
    /// Folder of plan files, relative to the workspace root.
    pub plans_dir: PathBuf,
    /// Folder of run artifacts, relative to the workspace root.
    pub log_dir: PathBuf,
    /// Model the agent CLI is asked to use.
    pub model: String,
    /// Iteration budget of a run (at least 1).
    pub iterations: u32,
    /// How the completion token is recognised.
    pub completion_mode: CompletionMode,
    /// Run reviewer passes over implemented tasks.
    pub reviewer: bool,
    /// Custom implementation prompt.
    pub prompt_file: Option<PathBuf>,
    /// Extra files referenced in every implementation prompt.
    pub context_files: Vec<PathBuf>,
    /// Verification commands.
    pub verify_cmds: Vec<String>,
    /// Timeout of each verification command in seconds (0 = none).
    pub verify_timeout_sec: u64,
    /// Timeout of each agent step in seconds (0 = none).
    pub claude_timeout_sec: u64,
    /// Kill an agent step that prints nothing for this many seconds (0 = never).
    pub claude_idle_timeout_sec: u64,
    /// Extra attempts of an agent step that exits non-zero.
    pub claude_retries: u32,
    /// Seconds between those attempts.
    pub claude_retry_backoff_sec: u64,
    /// Extra attempts after a transient API failure (429/529/5xx/connection), with
    /// exponential backoff and jitter.
    pub claude_transient_retries: u32,
    /// Cap of the transient-failure backoff in seconds.
    pub claude_transient_backoff_max_sec: u64,
    /// Passed to the agent CLI as `CLAUDE_CODE_MAX_RETRIES` when set.
    pub claude_max_retries: Option<u32>,
    /// The Claude Code executable.
    pub claude_bin: String,
    /// Which agent runs the steps.
    pub executor: ExecutorKind,
    /// Command template for `executor=command` (required then).
    pub agent_cmd: Option<String>,
    /// Environment for agents and verification commands on top of the allow-list:
    /// space-separated `NAME`s to pass through and `NAME=value` pairs (never `LOOPD_*`).
    pub agent_env: Option<String>,
    /// Whether artifacts are mirrored under `global_log_dir`.
    pub artifact_mode: ArtifactMode,
    /// Machine-wide artifact folder, as written (see [`Config::global_log_dir_expanded`]).
    pub global_log_dir: PathBuf,
    /// How runs are named.
    pub run_naming_mode: NameSource,
    /// Model used to name runs.
    pub run_naming_model: String,
    /// Branch runs start from; `None` = the detected default branch, else `main`.
    pub base_branch: Option<String>,
    /// Prefix of every run branch.
    pub run_branch_prefix: String,
    /// Branch finished work is merged into; `None` = `agent/<spec_slug>`.
    pub merge_target_branch: Option<String>,
    /// How finished work reaches the merge target.
    pub merge_strategy: MergeStrategy,
    /// Where run worktrees go (`{{ repo }}`, `{{ run_branch | sanitize }}`).
    pub worktree_path_template: String,
    /// Runs worked at once by the daemon (at least 1).
    pub max_concurrency: u32,
    /// Runs worked at once per workspace; `None` = no cap.
    pub max_runs_per_workspace: Option<u32>,
    /// Order in which pending runs are started.
    pub queue_policy: QueueOrder,
    /// Fail a run after this many verification failures in a row (0 = never).
    pub max_consecutive_verification_failures: u32,
    /// Prompt rewrites per run at most.
    pub watchdog_max_rewrites: u32,
    /// Steps without a commit or plan change before the watchdog acts.
    pub watchdog_no_progress_steps: u32,
    /// Steps on the same task before the watchdog acts.
    pub watchdog_repeat_task_steps: u32,
    /// Reviewer steps per iteration at most.
    pub max_review_passes: u32,
    /// Seconds between heartbeat events of a running step.
    pub heartbeat_sec: u64,
    /// Warn when a step runs longer than this many seconds.
    pub warn_iteration_sec: u64,
    /// Warn when a step prints more than this many bytes.
    pub warn_output_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            specs_dir: "specs".into(),
            plans_dir: "specs/planning".into(),
            log_dir: "logs/loop".into(),
            model: "opus".into(),
            iterations: 50,
            completion_mode: CompletionMode::Trailing,
            reviewer: true,
            prompt_file: None,
            context_files: Vec::new(),
            verify_cmds: Vec::new(),
            verify_timeout_sec: 0,
            claude_timeout_sec: 0,
            claude_idle_timeout_sec: 0,
            claude_retries: 0,
            claude_retry_backoff_sec: 5,
            claude_transient_retries: 4,
            claude_transient_backoff_max_sec: 300,
            claude_max_retries: None,
            claude_bin: "claude".into(),
            executor: ExecutorKind::Claude,
            agent_cmd: None,
            agent_env: None,
            artifact_mode: ArtifactMode::Mirror,
            global_log_dir: "~/.local/share/loopd".into(),
            run_naming_mode: NameSource::Haiku,
            run_naming_model: "haiku".into(),
            base_branch: None,
            run_branch_prefix: "run/".into(),
            merge_target_branch: None,
            merge_strategy: MergeStrategy::Squash,
            worktree_path_template: "../{{ repo }}.{{ run_branch | sanitize }}".into(),
            max_concurrency: 3,
            max_runs_per_workspace: None,
            queue_policy: QueueOrder::Fifo,
            max_consecutive_verification_failures: 3,
            watchdog_max_rewrites: 2,
            watchdog_no_progress_steps: 3,
            watchdog_repeat_task_steps: 3,
            max_review_passes: 10,
            heartbeat_sec: 300,
            warn_iteration_sec: 300,
            warn_output_bytes: 200_000,
        }
    }
}

/// Expands a leading `~` of `path` to `home`; other paths, and every path when `home` is
/// unknown, are returned unchanged.
pub(super) fn expand_tilde(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

impl Config {
    /// `global_log_dir` with a leading `~` replaced by `$HOME` (unchanged when `$HOME` is not
    /// set).
    pub fn global_log_dir_expanded(&self) -> PathBuf {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        expand_tilde(&self.global_log_dir, home.as_deref())
    }

    /// Checks the rules a single value cannot express (minimums, required text, `agent_cmd`
    /// with `executor=command`, paths that are valid UTF-8). Errors name
    /// [`ConfigSource::Effective`]; [`Config::load`] reports the layer instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&|_| ConfigSource::Effective)
    }

    /// [`Config::validate`], naming the source that `source_of` gives for a key.
    pub(super) fn validate_with(
        &self,
        source_of: &dyn Fn(&str) -> ConfigSource,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::InvalidValue {
            key: key.to_owned(),
            value,
            source_name: source_of(key),
            reason: reason.to_owned(),
        };
        for (key, n, min) in [
            ("iterations", Some(self.iterations), 1),
            ("max_concurrency", Some(self.max_concurrency), 1),
            ("max_runs_per_workspace", self.max_runs_per_workspace, 1),
        ] {
            if let Some(n) = n.filter(|n| *n < min) {
                return Err(invalid(key, n.to_string(), "must be at least 1"));
            }
        }
        for (key, text) in [
            ("model", &self.model),
            ("claude_bin", &self.claude_bin),
            ("run_naming_model", &self.run_naming_model),
            ("run_branch_prefix", &self.run_branch_prefix),
            ("worktree_path_template", &self.worktree_path_template),
        ] {
            if text.trim().is_empty() {
                return Err(invalid(key, text.clone(), "a value is required"));
            }
        }
        let mut paths = vec![
            ("specs_dir", &self.specs_dir),
            ("plans_dir", &self.plans_dir),
            ("log_dir", &self.log_dir),
            ("global_log_dir", &self.global_log_dir),
        ];
        for (key, path) in &paths {
            if path.as_os_str().is_empty() {
                return Err(invalid(key, String::new(), "a value is required"));
            }
        }
        paths.extend(self.prompt_file.iter().map(|p| ("prompt_file", p)));
        paths.extend(self.context_files.iter().map(|p| ("context_files", p)));
        for (key, path) in paths {
            if path.to_str().is_none() {
                return Err(invalid(
                    key,
                    path.to_string_lossy().into_owned(),
                    "paths must be valid UTF-8",
                ));
            }
        }
        if let Some(value) = &self.agent_env
            && let Err(reason) = crate::process::parse_agent_env(value)
        {
            return Err(invalid("agent_env", value.clone(), &reason));
        }
        let agent_cmd_set = self
            .agent_cmd
            .as_deref()
            .is_some_and(|c| !c.trim().is_empty());
        if self.executor == ExecutorKind::Command && !agent_cmd_set {
            return Err(ConfigError::Missing {
                key: "agent_cmd".to_owned(),
                reason: "`executor=command` runs the agent from the `agent_cmd` template"
                    .to_owned(),
                source_name: source_of("executor"),
            });
        }
        // A template that cannot be split into words would only fail when the first agent
        // step starts; refuse it with the other config errors, before anything runs.
        if self.executor == ExecutorKind::Command
            && let Some(template) = &self.agent_cmd
            && let Err(e) = crate::impls::CommandExecutor::new(template)
        {
            return Err(invalid("agent_cmd", template.clone(), &e.reason));
        }
        Ok(())
    }

    /// The configuration as a JSON object of config keys (the form stored with every run).
    /// Option keys that are unset are `null`, lists are arrays.
    ///
    /// A configuration that passed [`Config::validate`] always converts; should a path not be
    /// valid UTF-8 anyway, the result is `null` and an error is logged.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|err| {
            tracing::error!(%err, "configuration cannot be represented as JSON");
            serde_json::Value::Null
        })
    }

    /// Reads a configuration from a JSON object of config keys, such as [`Config::to_json`]
    /// wrote. Missing keys take their defaults; unknown keys are an error. The result is
    /// validated.
    pub fn from_json(json: &serde_json::Value) -> Result<Config, ConfigError> {
        let source = ConfigSource::Effective;
        let Some(object) = json.as_object() else {
            return Err(ConfigError::InvalidValue {
                key: "config".to_owned(),
                value: json.to_string(),
                source_name: source,
                reason: "expected a JSON object of config keys".to_owned(),
            });
        };
        let mut layer = Layer::new(source.clone());
        for (key, value) in object {
            let spec = key_spec(key).ok_or_else(|| ConfigError::UnknownKey {
                key: key.clone(),
                source_name: source.clone(),
            })?;
            layer.insert(spec, value_from_json(spec, value, &source)?);
        }
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(layer);
        let config: Config = figment
            .extract()
            .map_err(|err| map_figment_error(&figment, err))?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KEYS;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::default();
        assert_eq!(c.specs_dir, Path::new("specs"));
        assert_eq!(c.plans_dir, Path::new("specs/planning"));
        assert_eq!(c.iterations, 50);
        assert_eq!(c.completion_mode, CompletionMode::Trailing);
        assert_eq!(c.executor, ExecutorKind::Claude);
        assert_eq!(c.artifact_mode, ArtifactMode::Mirror);
        assert_eq!(c.queue_policy, QueueOrder::Fifo);
        assert_eq!(c.claude_transient_retries, 4);
        assert_eq!(c.warn_output_bytes, 200_000);
        c.validate().unwrap();
    }

    #[test]
    fn json_has_exactly_the_config_keys() {
        let json = Config::default().to_json();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted_keys = KEYS.to_vec();
        sorted_keys.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, sorted_keys);
        assert_eq!(json["prompt_file"], serde_json::Value::Null);
        assert_eq!(json["executor"], "claude");
        assert_eq!(json["queue_policy"], "fifo");
    }

    #[test]
    fn json_round_trip() {
        let config = Config {
            model: "sonnet".into(),
            iterations: 7,
            completion_mode: CompletionMode::Exact,
            reviewer: false,
            prompt_file: Some("my prompt.txt".into()),
            context_files: vec!["a b.md".into(), "c.md".into()],
            verify_cmds: vec!["cargo test".into(), "cargo clippy".into()],
            claude_max_retries: Some(2),
            executor: ExecutorKind::Command,
            agent_cmd: Some("codex exec --full-auto {prompt}".into()),
            artifact_mode: ArtifactMode::Workspace,
            run_naming_mode: NameSource::SpecSlug,
            base_branch: Some("develop".into()),
            merge_strategy: MergeStrategy::None,
            max_runs_per_workspace: Some(1),
            queue_policy: QueueOrder::NewestFirst,
            ..Config::default()
        };
        let json = config.to_json();
        assert_eq!(Config::from_json(&json).unwrap(), config);
        assert_eq!(
            Config::from_json(&Config::default().to_json()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn from_json_fills_defaults_and_rejects_unknown_keys() {
        let config = Config::from_json(&serde_json::json!({"iterations": 3})).unwrap();
        assert_eq!(config.iterations, 3);
        assert_eq!(config.model, "opus");
        let err = Config::from_json(&serde_json::json!({"iterationz": 3})).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "iterationz"));
        assert!(Config::from_json(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn command_executor_requires_agent_cmd() {
        let config = Config {
            executor: ExecutorKind::Command,
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(matches!(err, ConfigError::Missing { ref key, .. } if key == "agent_cmd"));
        assert!(err.to_string().contains("agent_cmd"), "{err}");
        let config = Config {
            agent_cmd: Some("codex exec {prompt}".into()),
            ..config
        };
        config.validate().unwrap();
    }

    #[test]
    fn validate_rejects_zero_minimums_and_blank_text() {
        let zero = Config {
            iterations: 0,
            ..Config::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("iterations")
        );
        let zero = Config {
            max_runs_per_workspace: Some(0),
            ..Config::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("max_runs_per_workspace")
        );
        let blank = Config {
            model: " ".into(),
            ..Config::default()
        };
        assert!(blank.validate().unwrap_err().to_string().contains("model"));
    }

    #[test]
    fn tilde_expands_to_home() {
        let home = Path::new("/home/u");
        assert_eq!(
            expand_tilde(Path::new("~/.local/share/loopd"), Some(home)),
            Path::new("/home/u/.local/share/loopd")
        );
        assert_eq!(expand_tilde(Path::new("~"), Some(home)), home);
        assert_eq!(
            expand_tilde(Path::new("/var/loopd"), Some(home)),
            Path::new("/var/loopd")
        );
        assert_eq!(expand_tilde(Path::new("~/x"), None), Path::new("~/x"));
        // `~user` is not ours to expand.
        assert_eq!(
            expand_tilde(Path::new("~other/x"), Some(home)),
            Path::new("~other/x")
        );
    }

    #[test]
    fn enums_parse_their_spellings() {
        for k in ExecutorKind::ALL {
            assert_eq!(k.as_str().parse::<ExecutorKind>().unwrap(), *k);
        }
        for m in ArtifactMode::ALL {
            assert_eq!(m.as_str().parse::<ArtifactMode>().unwrap(), *m);
        }
    }
}
