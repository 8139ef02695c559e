//! What [`Config`] does beyond its declaration (`decl.rs`): validation (each key's own rule
//! from its declaration, then the rules that span several keys) and the JSON form stored with
//! every run.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::Serialized;

use super::decl::{Config, ExecutorKind, KEY_SPECS, key_spec};
use super::keys::value_from_json;
use super::layer::{Layer, map_figment_error};
use crate::error::{ConfigError, ConfigSource};

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
        let mut paths = vec![
            ("specs_dir", &self.specs_dir),
            ("plans_dir", &self.plans_dir),
            ("log_dir", &self.log_dir),
            ("global_log_dir", &self.global_log_dir),
        ];
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
        // Each key's own rule (required, range, branch name, choice) is the one its
        // declaration gives, applied to the value as it is stored.
        let json = serde_json::to_value(self).map_err(|e| {
            invalid(
                "config",
                String::new(),
                &format!("cannot be represented as JSON: {e}"),
            )
        })?;
        for spec in KEY_SPECS {
            let value = json.get(spec.key).unwrap_or(&serde_json::Value::Null);
            value_from_json(spec, value, &source_of(spec.key))?;
        }
        if let Some(value) = &self.agent_env
            && let Err(reason) = crate::process::parse_agent_env(value)
        {
            return Err(invalid("agent_env", value.clone(), &reason));
        }
        if let Err(reason) = self.agent_limits() {
            let key = reason
                .split(':')
                .next()
                .unwrap_or("agent_memory_max")
                .to_owned();
            let value = match key.as_str() {
                "agent_pids_max" => self.agent_pids_max.map(|n| n.to_string()),
                "agent_cpu_max" => self.agent_cpu_max.clone(),
                _ => self.agent_memory_max.clone(),
            };
            return Err(invalid(&key, value.unwrap_or_default(), &reason));
        }
        if let Some(url) = self.notify_webhook_url.as_deref().filter(|u| !u.is_empty())
            && let Err(reason) = crate::impls::notify::WebhookUrl::parse(url)
        {
            return Err(invalid("notify_webhook_url", url.to_owned(), &reason));
        }
        if let Some(name) = self
            .notify_webhook_secret
            .as_deref()
            .and_then(|s| s.strip_prefix("env:"))
            && (name.is_empty() || name.contains('='))
        {
            return Err(invalid(
                "notify_webhook_secret",
                format!("env:{name}"),
                "`env:` must be followed by the name of an environment variable",
            ));
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
        for (key, value) in [
            ("codex_args", &self.codex_args),
            ("gemini_args", &self.gemini_args),
        ] {
            if let Err(reason) = crate::impls::agent_cli_split(key, value.as_deref()) {
                return Err(invalid(key, value.clone().unwrap_or_default(), &reason));
            }
        }
        Ok(())
    }

    /// The resource limits of agent cgroups (`agent_memory_max`, `agent_pids_max`,
    /// `agent_cpu_max`), parsed.
    ///
    /// # Errors
    /// A message naming the key whose value does not parse.
    pub fn agent_limits(&self) -> Result<crate::process::AgentLimits, String> {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        crate::process::AgentLimits::parse(
            text(&self.agent_memory_max).as_deref(),
            self.agent_pids_max,
            text(&self.agent_cpu_max).as_deref(),
        )
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
    use crate::backend::QueueOrder;
    use crate::completion::CompletionMode;
    use crate::config::{ArtifactMode, KEYS};
    use crate::domain::{MergeStrategy, NameSource};

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
