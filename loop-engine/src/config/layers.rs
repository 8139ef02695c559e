//! Precedence (SPEC §8): defaults < `.loop/config` < `--config FILE` (or `LOOP_CONFIG`) <
//! overrides, merged through figment. Each layer is typed before the merge, so a bad value is
//! reported with the layer that supplied it.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::Serialized;

use super::decl::{Config, key_spec};
use super::file::KeyValueFile;
use super::keys::{value_from_json, value_from_text};
use super::layer::{Layer, map_figment_error, source_of_key};
use crate::error::{ConfigError, ConfigSource};

/// The environment variable naming a config file when no `--config FILE` is given.
pub const LOOP_CONFIG_ENV: &str = "LOOP_CONFIG";

/// The workspace config file: `<workspace_root>/.loop/config`.
pub fn workspace_config_path(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".loop").join("config")
}

/// Where a configuration is loaded from, lowest precedence first: built-in defaults, the
/// workspace's `.loop/config`, the explicit config file (`config_file`, else
/// `env_config_file`), then the overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigLayers {
    /// The workspace root; `<root>/.loop/config` is read if it exists.
    pub workspace_root: PathBuf,
    /// `--config FILE`; it must exist. Relative paths are taken from the current directory.
    pub config_file: Option<PathBuf>,
    /// The value of `LOOP_CONFIG` (see [`Config::config_file_from_env`]), used when
    /// `config_file` is `None`; it must exist.
    pub env_config_file: Option<PathBuf>,
    /// Overrides as a JSON object of key → string, number, boolean, array or `null` (the HTTP
    /// API's `config_override`). Below `overrides`.
    pub json_overrides: serde_json::Map<String, serde_json::Value>,
    /// Overrides as `(key, value)` text pairs (CLI flags); highest precedence, later pairs win.
    pub overrides: Vec<(String, String)>,
}

impl ConfigLayers {
    /// Layers for `workspace_root` with no explicit file and no overrides.
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            ..Self::default()
        }
    }

    /// The same layers, with `env_config_file` taken from the `LOOP_CONFIG` environment
    /// variable.
    pub fn with_env(mut self) -> Self {
        self.env_config_file = Config::config_file_from_env();
        self
    }
}

/// A loaded configuration and the warnings found on the way (unknown keys in files).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedConfig {
    /// The effective configuration, validated.
    pub config: Config,
    /// One human-readable line per warning, each naming file and line.
    pub warnings: Vec<String>,
}

/// The override layer: JSON overrides first, then text pairs, so that pairs win.
fn override_layer(layers: &ConfigLayers) -> Result<Layer, ConfigError> {
    let source = ConfigSource::Override;
    let mut layer = Layer::new(source.clone());
    let spec_of = |key: &str| {
        key_spec(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_owned(),
            source_name: source.clone(),
        })
    };
    for (key, value) in &layers.json_overrides {
        let spec = spec_of(key)?;
        layer.insert(spec, value_from_json(spec, value, &source)?);
    }
    for (key, value) in &layers.overrides {
        let spec = spec_of(key.trim())?;
        layer.insert(spec, value_from_text(spec, value, &source)?);
    }
    Ok(layer)
}

impl Config {
    /// Loads the configuration from `layers` (see [`ConfigLayers`] for the precedence) and
    /// validates it. A missing `.loop/config` is fine; a missing explicit file is an
    /// [`ConfigError::Io`]. Unknown keys in files are warnings; in overrides they are errors.
    pub fn load(layers: &ConfigLayers) -> Result<LoadedConfig, ConfigError> {
        let mut warnings = Vec::new();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) =
            KeyValueFile::read_if_exists(&workspace_config_path(&layers.workspace_root))?
        {
            warnings.extend_from_slice(file.warnings());
            figment = figment.merge(file);
        }
        if let Some(path) = layers
            .config_file
            .as_ref()
            .or(layers.env_config_file.as_ref())
        {
            let file = KeyValueFile::read(path)?;
            warnings.extend_from_slice(file.warnings());
            figment = figment.merge(file);
        }
        figment = figment.merge(override_layer(layers)?);
        let config: Config = figment
            .extract()
            .map_err(|err| map_figment_error(&figment, err))?;
        config.validate_with(&|key| source_of_key(&figment, key))?;
        Ok(LoadedConfig { config, warnings })
    }

    /// The config file named by the `LOOP_CONFIG` environment variable, if it is set and not
    /// empty.
    pub fn config_file_from_env() -> Option<PathBuf> {
        std::env::var_os(LOOP_CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use figment::value::Value;

    use super::*;
    use crate::config::ExecutorKind;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn workspace(config: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = config {
            write(&workspace_config_path(dir.path()), text);
        }
        dir
    }

    #[test]
    fn defaults_only() {
        let ws = workspace(None);
        let loaded = Config::load(&ConfigLayers::new(ws.path())).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn workspace_file_beats_defaults() {
        let ws = workspace(Some("model=sonnet\niterations=7\n"));
        let config = Config::load(&ConfigLayers::new(ws.path())).unwrap().config;
        assert_eq!(config.model, "sonnet");
        assert_eq!(config.iterations, 7);
        assert_eq!(config.max_concurrency, 3);
    }

    #[test]
    fn config_flag_beats_workspace_file() {
        let ws = workspace(Some("model=sonnet\niterations=7\n"));
        let extra = ws.path().join("extra.conf");
        write(&extra, "model=haiku\n");
        let layers = ConfigLayers {
            config_file: Some(extra),
            ..ConfigLayers::new(ws.path())
        };
        let config = Config::load(&layers).unwrap().config;
        assert_eq!(config.model, "haiku");
        // Keys the explicit file does not set still come from the workspace file.
        assert_eq!(config.iterations, 7);
    }

    #[test]
    fn loop_config_env_is_used_without_config_flag() {
        let ws = workspace(Some("model=sonnet\n"));
        let env_file = ws.path().join("env.conf");
        write(&env_file, "model=from-env\n");
        let flag_file = ws.path().join("flag.conf");
        write(&flag_file, "model=from-flag\n");
        let layers = ConfigLayers {
            env_config_file: Some(env_file),
            ..ConfigLayers::new(ws.path())
        };
        assert_eq!(Config::load(&layers).unwrap().config.model, "from-env");
        let layers = ConfigLayers {
            config_file: Some(flag_file),
            ..layers
        };
        assert_eq!(Config::load(&layers).unwrap().config.model, "from-flag");
    }

    #[test]
    fn overrides_beat_everything() {
        let ws = workspace(Some("model=sonnet\nreviewer=off\n"));
        let extra = ws.path().join("extra.conf");
        write(&extra, "model=haiku\n");
        let layers = ConfigLayers {
            config_file: Some(extra),
            json_overrides: serde_json::json!({"model": "json-model", "iterations": 9})
                .as_object()
                .unwrap()
                .clone(),
            overrides: vec![("model".into(), "flag-model".into())],
            ..ConfigLayers::new(ws.path())
        };
        let config = Config::load(&layers).unwrap().config;
        assert_eq!(config.model, "flag-model");
        assert_eq!(config.iterations, 9);
        assert!(!config.reviewer);
    }

    #[test]
    fn override_can_unset_an_option_set_in_a_file() {
        let ws = workspace(Some("base_branch=develop\n"));
        let layers = ConfigLayers {
            overrides: vec![("base_branch".into(), String::new())],
            ..ConfigLayers::new(ws.path())
        };
        assert_eq!(Config::load(&layers).unwrap().config.base_branch, None);
    }

    #[test]
    fn missing_explicit_file_is_an_io_error() {
        let ws = workspace(None);
        let missing = ws.path().join("nope.conf");
        let layers = ConfigLayers {
            config_file: Some(missing.clone()),
            ..ConfigLayers::new(ws.path())
        };
        let err = Config::load(&layers).unwrap_err();
        assert!(matches!(err, ConfigError::Io { ref path, .. } if *path == missing));
    }

    #[test]
    fn bad_values_in_a_file_name_key_value_and_file() {
        let ws = workspace(Some("# settings\niterations=lots\n"));
        let err = Config::load(&ConfigLayers::new(ws.path())).unwrap_err();
        let text = err.to_string();
        let file = workspace_config_path(ws.path());
        assert!(text.contains("iterations"), "{text}");
        assert!(text.contains("lots"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");

        let ws = workspace(Some("merge_strategy=rebase\n"));
        let text = Config::load(&ConfigLayers::new(ws.path()))
            .unwrap_err()
            .to_string();
        assert!(text.contains("merge_strategy"), "{text}");
        assert!(text.contains("rebase"), "{text}");
        assert!(text.contains(".loop/config"), "{text}");
        assert!(text.contains("squash, merge, none"), "{text}");
    }

    #[test]
    fn bad_override_value_names_the_override() {
        let ws = workspace(None);
        let layers = ConfigLayers {
            overrides: vec![("max_concurrency".into(), "many".into())],
            ..ConfigLayers::new(ws.path())
        };
        let err = Config::load(&layers).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::InvalidValue {
                source_name: ConfigSource::Override,
                ..
            }
        ));
        let text = err.to_string();
        assert!(text.contains("override") && text.contains("many"), "{text}");
    }

    #[test]
    fn unknown_override_key_is_an_error() {
        let ws = workspace(None);
        let layers = ConfigLayers {
            overrides: vec![("modle".into(), "opus".into())],
            ..ConfigLayers::new(ws.path())
        };
        let err = Config::load(&layers).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::UnknownKey { ref key, source_name: ConfigSource::Override } if key == "modle"
        ));
        let layers = ConfigLayers {
            json_overrides: serde_json::json!({"bogus": 1}).as_object().unwrap().clone(),
            ..ConfigLayers::new(ws.path())
        };
        assert!(matches!(
            Config::load(&layers).unwrap_err(),
            ConfigError::UnknownKey { ref key, .. } if key == "bogus"
        ));
    }

    #[test]
    fn command_executor_without_agent_cmd_names_the_layer_that_chose_it() {
        let ws = workspace(Some("executor=command\n"));
        let err = Config::load(&ConfigLayers::new(ws.path())).unwrap_err();
        match &err {
            ConfigError::Missing {
                key, source_name, ..
            } => {
                assert_eq!(key, "agent_cmd");
                assert_eq!(
                    *source_name,
                    ConfigSource::File(workspace_config_path(ws.path()))
                );
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("agent_cmd"));
        let layers = ConfigLayers {
            overrides: vec![("agent_cmd".into(), "codex exec {prompt}".into())],
            ..ConfigLayers::new(ws.path())
        };
        let config = Config::load(&layers).unwrap().config;
        assert_eq!(config.executor, ExecutorKind::Command);
        assert_eq!(config.agent_cmd.as_deref(), Some("codex exec {prompt}"));
    }

    #[test]
    fn unknown_file_keys_are_returned_as_warnings() {
        let ws = workspace(Some("model=sonnet\n\nmodle=opus\n"));
        let loaded = Config::load(&ConfigLayers::new(ws.path())).unwrap();
        assert_eq!(loaded.config.model, "sonnet");
        assert_eq!(loaded.warnings.len(), 1);
        let w = &loaded.warnings[0];
        assert!(w.contains("modle") && w.contains(":3"), "{w}");
    }

    #[test]
    fn every_choice_spelling_loads_into_its_enum() {
        let ws = workspace(None);
        for spec in crate::config::KEY_SPECS {
            let Some(options) = spec.choices() else {
                continue;
            };
            for option in options {
                let mut layers = ConfigLayers::new(ws.path());
                layers.overrides = vec![(spec.key.into(), (*option).into())];
                if spec.key == "executor" {
                    layers
                        .overrides
                        .push(("agent_cmd".into(), "x {prompt}".into()));
                }
                let config = Config::load(&layers).unwrap().config;
                assert_eq!(config.to_json()[spec.key], *option, "{}", spec.key);
            }
        }
    }

    #[test]
    fn figment_errors_keep_key_value_and_file() {
        let file = PathBuf::from("/w/.loop/config");
        let mut layer = Layer::new(ConfigSource::File(file.clone()));
        layer.insert(key_spec("iterations").unwrap(), Value::from("many"));
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(layer);
        let err = figment.extract::<Config>().unwrap_err();
        let mapped = map_figment_error(&figment, err);
        match mapped {
            ConfigError::InvalidValue {
                key,
                value,
                source_name,
                ..
            } => {
                assert_eq!(key, "iterations");
                assert_eq!(value, "many");
                assert_eq!(source_name, ConfigSource::File(file));
            }
            other => panic!("unexpected error {other:?}"),
        }
    }
}
