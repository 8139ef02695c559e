//! The table of config keys: every key with its kind and a one-line description, and the
//! conversion of a raw value (text from a file or a flag, JSON from the HTTP API or a stored
//! run) into a typed figment value.
//!
//! Values are typed here, per layer, rather than by figment at extraction time: only here do
//! we still know the value as the user wrote it and the file it came from, which every error
//! must name.

use figment::value::{Empty, Tag, Value};

use crate::error::{ConfigError, ConfigSource};

/// What a key accepts; decides how raw text and JSON are turned into a typed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueKind {
    /// A path; must not be empty.
    Path,
    /// A path; empty means unset.
    OptPath,
    /// Free text; must not be empty.
    Text,
    /// Free text; empty means unset.
    OptText,
    /// Paths separated by whitespace (a JSON array in JSON).
    PathList,
    /// Shell commands separated by `|` (a JSON array in JSON); blanks dropped.
    CmdList,
    /// `true/false/1/0/yes/no/on/off`, any case.
    Bool,
    /// A whole number of at least `min`.
    U32 { min: u32 },
    /// A whole number of at least `min`; empty means unset.
    OptU32 { min: u32 },
    /// A whole number (seconds, bytes).
    U64,
    /// One of the listed spellings (any case).
    Choice(&'static [&'static str]),
}

/// One configuration key: its name, what it accepts and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The key, as written in files, flags and JSON.
    pub key: &'static str,
    /// One line for `--help` and the docs.
    pub description: &'static str,
    kind: ValueKind,
}

impl KeySpec {
    /// A short human description of the accepted values, e.g. `integer >= 1` or
    /// `exact|trailing`.
    pub fn accepts(&self) -> String {
        match self.kind {
            ValueKind::Path => "path".to_owned(),
            ValueKind::OptPath => "path (empty = unset)".to_owned(),
            ValueKind::Text => "text".to_owned(),
            ValueKind::OptText => "text (empty = unset)".to_owned(),
            ValueKind::PathList => "space-separated paths".to_owned(),
            ValueKind::CmdList => "commands separated by `|`".to_owned(),
            ValueKind::Bool => "true|false|1|0|yes|no|on|off".to_owned(),
            ValueKind::U32 { min } => format!("integer >= {min}"),
            ValueKind::OptU32 { min } => format!("integer >= {min} (empty = unset)"),
            ValueKind::U64 => "integer >= 0".to_owned(),
            ValueKind::Choice(options) => options.join("|"),
        }
    }

    /// The accepted spellings, for keys that take one of a fixed set of values.
    pub fn choices(&self) -> Option<&'static [&'static str]> {
        match self.kind {
            ValueKind::Choice(options) => Some(options),
            _ => None,
        }
    }

    /// True when an empty value means "unset" rather than being an error.
    pub fn is_optional(&self) -> bool {
        matches!(
            self.kind,
            ValueKind::OptPath
                | ValueKind::OptText
                | ValueKind::OptU32 { .. }
                | ValueKind::PathList
                | ValueKind::CmdList
        )
    }
}

const fn spec(key: &'static str, kind: ValueKind, description: &'static str) -> KeySpec {
    KeySpec {
        key,
        description,
        kind,
    }
}

/// Every key, in the order of [`KEYS`] and of the fields of [`Config`](super::Config).
pub const KEY_SPECS: &[KeySpec] = &[
    spec(
        "specs_dir",
        ValueKind::Path,
        "folder of spec files, relative to the workspace root",
    ),
    spec(
        "plans_dir",
        ValueKind::Path,
        "folder of plan files, relative to the workspace root",
    ),
    spec(
        "log_dir",
        ValueKind::Path,
        "folder of run artifacts, relative to the workspace root",
    ),
    spec(
        "model",
        ValueKind::Text,
        "model the agent CLI is asked to use",
    ),
    spec(
        "iterations",
        ValueKind::U32 { min: 1 },
        "iteration budget of a run",
    ),
    spec(
        "completion_mode",
        ValueKind::Choice(&["exact", "trailing"]),
        "how the completion token is recognised in the agent's output",
    ),
    spec(
        "reviewer",
        ValueKind::Bool,
        "run reviewer passes over implemented tasks",
    ),
    spec(
        "prompt_file",
        ValueKind::OptPath,
        "custom implementation prompt (default: .loop/prompt.txt if present)",
    ),
    spec(
        "context_files",
        ValueKind::PathList,
        "extra files referenced with @ in every implementation prompt",
    ),
    spec(
        "verify_cmds",
        ValueKind::CmdList,
        "verification commands, run with bash -lc in the worktree",
    ),
    spec(
        "verify_timeout_sec",
        ValueKind::U64,
        "timeout of each verification command (0 = none)",
    ),
    spec(
        "claude_timeout_sec",
        ValueKind::U64,
        "timeout of each agent step (0 = none)",
    ),
    spec(
        "claude_idle_timeout_sec",
        ValueKind::U64,
        "kill an agent step that prints nothing for this long (0 = never)",
    ),
    spec(
        "claude_retries",
        ValueKind::U32 { min: 0 },
        "extra attempts of an agent step that exits non-zero",
    ),
    spec(
        "claude_retry_backoff_sec",
        ValueKind::U64,
        "pause between those attempts",
    ),
    spec(
        "claude_transient_retries",
        ValueKind::U32 { min: 0 },
        "extra attempts, with exponential backoff and jitter, after a transient API failure",
    ),
    spec(
        "claude_transient_backoff_max_sec",
        ValueKind::U64,
        "cap of the transient-failure backoff",
    ),
    spec(
        "claude_max_retries",
        ValueKind::OptU32 { min: 0 },
        "passed to the agent CLI as CLAUDE_CODE_MAX_RETRIES when set",
    ),
    spec("claude_bin", ValueKind::Text, "the Claude Code executable"),
    spec(
        "executor",
        ValueKind::Choice(&["claude", "command", "simulate"]),
        "which agent runs the steps: the Claude CLI, the agent_cmd template, or the built-in simulation",
    ),
    spec(
        "agent_cmd",
        ValueKind::OptText,
        "command template for executor=command, e.g. `codex exec --full-auto {prompt}`",
    ),
    spec(
        "agent_env",
        ValueKind::OptText,
        "environment for agents and verification commands on top of the allow-list: space-separated NAMEs to pass through and NAME=value pairs (never LOOPD_*)",
    ),
    spec(
        "artifact_mode",
        ValueKind::Choice(&["mirror", "workspace"]),
        "also copy run artifacts under global_log_dir (mirror) or keep them in the workspace only",
    ),
    spec(
        "global_log_dir",
        ValueKind::Path,
        "machine-wide artifact folder (a leading ~ is $HOME)",
    ),
    spec(
        "run_naming_mode",
        ValueKind::Choice(&["haiku", "spec_slug"]),
        "name runs with the naming model (haiku) or from the spec (spec_slug)",
    ),
    spec(
        "run_naming_model",
        ValueKind::Text,
        "model used to name runs",
    ),
    spec(
        "base_branch",
        ValueKind::OptText,
        "branch runs start from (default: the detected default branch, else main)",
    ),
    spec(
        "run_branch_prefix",
        ValueKind::Text,
        "prefix of every run branch",
    ),
    spec(
        "merge_target_branch",
        ValueKind::OptText,
        "branch finished work is merged into (default: agent/<spec_slug>)",
    ),
    spec(
        "merge_strategy",
        ValueKind::Choice(&["squash", "merge", "none"]),
        "how finished work reaches the merge target",
    ),
    spec(
        "worktree_path_template",
        ValueKind::Text,
        "where run worktrees go, relative to the workspace root",
    ),
    spec(
        "max_concurrency",
        ValueKind::U32 { min: 1 },
        "runs worked at once by the daemon",
    ),
    spec(
        "max_runs_per_workspace",
        ValueKind::OptU32 { min: 1 },
        "runs worked at once per workspace (unset = no cap)",
    ),
    spec(
        "queue_policy",
        ValueKind::Choice(&["fifo", "newest_first"]),
        "order in which pending runs are started",
    ),
    spec(
        "max_consecutive_verification_failures",
        ValueKind::U32 { min: 0 },
        "fail a run after this many verification failures in a row (0 = never)",
    ),
    spec(
        "watchdog_max_rewrites",
        ValueKind::U32 { min: 0 },
        "prompt rewrites per run at most",
    ),
    spec(
        "watchdog_no_progress_steps",
        ValueKind::U32 { min: 0 },
        "steps without a commit or plan change before the watchdog acts",
    ),
    spec(
        "watchdog_repeat_task_steps",
        ValueKind::U32 { min: 0 },
        "steps on the same task before the watchdog acts",
    ),
    spec(
        "max_review_passes",
        ValueKind::U32 { min: 0 },
        "reviewer steps per iteration at most",
    ),
    spec(
        "heartbeat_sec",
        ValueKind::U64,
        "interval of heartbeat events of a running step",
    ),
    spec(
        "warn_iteration_sec",
        ValueKind::U64,
        "warn when a step runs longer than this",
    ),
    spec(
        "warn_output_bytes",
        ValueKind::U64,
        "warn when a step prints more than this",
    ),
];

/// Every config key, in the order of the fields of [`Config`](super::Config).
pub const KEYS: &[&str] = &[
    "specs_dir",
    "plans_dir",
    "log_dir",
    "model",
    "iterations",
    "completion_mode",
    "reviewer",
    "prompt_file",
    "context_files",
    "verify_cmds",
    "verify_timeout_sec",
    "claude_timeout_sec",
    "claude_idle_timeout_sec",
    "claude_retries",
    "claude_retry_backoff_sec",
    "claude_transient_retries",
    "claude_transient_backoff_max_sec",
    "claude_max_retries",
    "claude_bin",
    "executor",
    "agent_cmd",
    "agent_env",
    "artifact_mode",
    "global_log_dir",
    "run_naming_mode",
    "run_naming_model",
    "base_branch",
    "run_branch_prefix",
    "merge_target_branch",
    "merge_strategy",
    "worktree_path_template",
    "max_concurrency",
    "max_runs_per_workspace",
    "queue_policy",
    "max_consecutive_verification_failures",
    "watchdog_max_rewrites",
    "watchdog_no_progress_steps",
    "watchdog_repeat_task_steps",
    "max_review_passes",
    "heartbeat_sec",
    "warn_iteration_sec",
    "warn_output_bytes",
];

/// The spec of `key`, if it is a config key.
pub fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEY_SPECS.iter().find(|s| s.key == key)
}

/// The "unset" value of figment (deserialises as `None`).
fn none() -> Value {
    Value::Empty(Tag::Default, Empty::None)
}

fn invalid(spec: &KeySpec, value: &str, source: &ConfigSource, reason: String) -> ConfigError {
    ConfigError::InvalidValue {
        key: spec.key.to_owned(),
        value: value.to_owned(),
        source_name: source.clone(),
        reason,
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn split_paths(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn split_cmds<'a>(parts: impl Iterator<Item = &'a str>) -> Vec<String> {
    parts
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Converts `raw` (from a file line or a flag) into the typed value of `spec`'s key. Text and
/// path values are kept verbatim; everything else ignores surrounding whitespace, and a
/// blank value means "unset".
pub(super) fn value_from_text(
    spec: &KeySpec,
    raw: &str,
    source: &ConfigSource,
) -> Result<Value, ConfigError> {
    let text = raw.trim();
    if text.is_empty() {
        return match spec.kind {
            ValueKind::OptPath | ValueKind::OptText | ValueKind::OptU32 { .. } => Ok(none()),
            ValueKind::PathList | ValueKind::CmdList => Ok(Value::from(Vec::<String>::new())),
            _ => Err(invalid(
                spec,
                raw,
                source,
                format!("a value is required (expected {})", spec.accepts()),
            )),
        };
    }
    match spec.kind {
        // Quoted file values keep their spaces: they are the one way to write them.
        ValueKind::Path | ValueKind::OptPath | ValueKind::Text | ValueKind::OptText => {
            Ok(Value::from(raw))
        }
        ValueKind::PathList => Ok(Value::from(split_paths(text))),
        ValueKind::CmdList => Ok(Value::from(split_cmds(text.split('|')))),
        ValueKind::Bool => parse_bool(text).map(Value::from).ok_or_else(|| {
            invalid(
                spec,
                raw,
                source,
                format!("expected one of {}", spec.accepts()),
            )
        }),
        ValueKind::U32 { min } | ValueKind::OptU32 { min } => match text.parse::<u32>() {
            Ok(n) if n >= min => Ok(Value::from(n)),
            _ => Err(invalid(
                spec,
                raw,
                source,
                format!("expected a whole number from {min} to {}", u32::MAX),
            )),
        },
        ValueKind::U64 => text.parse::<u64>().map(Value::from).map_err(|_| {
            invalid(
                spec,
                raw,
                source,
                format!("expected a whole number from 0 to {}", u64::MAX),
            )
        }),
        ValueKind::Choice(options) => {
            let lower = text.to_ascii_lowercase();
            if options.contains(&lower.as_str()) {
                Ok(Value::from(lower))
            } else {
                Err(invalid(
                    spec,
                    raw,
                    source,
                    format!("expected one of {}", options.join(", ")),
                ))
            }
        }
    }
}

/// Converts a JSON value (HTTP override, stored run config) into the typed value of `spec`'s
/// key. Strings are read like file text; numbers, booleans, arrays and `null` are accepted
/// where they fit the key.
pub(super) fn value_from_json(
    spec: &KeySpec,
    json: &serde_json::Value,
    source: &ConfigSource,
) -> Result<Value, ConfigError> {
    use serde_json::Value as J;
    let wrong_type = || {
        invalid(
            spec,
            &json.to_string(),
            source,
            format!("expected {}", spec.accepts()),
        )
    };
    match json {
        J::String(text) => value_from_text(spec, text, source),
        J::Null => value_from_text(spec, "", source).map_err(|_| wrong_type()),
        J::Bool(b) if spec.kind == ValueKind::Bool => Ok(Value::from(*b)),
        J::Number(n) => match spec.kind {
            ValueKind::U32 { .. } | ValueKind::OptU32 { .. } | ValueKind::U64 => {
                value_from_text(spec, &n.to_string(), source)
            }
            _ => Err(wrong_type()),
        },
        J::Array(items) => {
            let texts = items
                .iter()
                .map(|item| item.as_str().ok_or_else(wrong_type))
                .collect::<Result<Vec<_>, _>>()?;
            match spec.kind {
                ValueKind::PathList => Ok(Value::from(
                    texts
                        .into_iter()
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                )),
                ValueKind::CmdList => Ok(Value::from(split_cmds(texts.into_iter()))),
                _ => Err(wrong_type()),
            }
        }
        J::Bool(_) | J::Object(_) => Err(wrong_type()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ConfigSource {
        ConfigSource::File("/w/.loop/config".into())
    }

    #[test]
    fn keys_and_specs_agree() {
        let from_specs: Vec<&str> = KEY_SPECS.iter().map(|s| s.key).collect();
        assert_eq!(from_specs, KEYS);
        for s in KEY_SPECS {
            assert!(!s.description.is_empty(), "{} lacks a description", s.key);
            assert!(!s.accepts().is_empty());
        }
    }

    #[test]
    fn every_boolean_spelling_is_accepted() {
        let spec = key_spec("reviewer").unwrap();
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("Yes", true),
            ("on", true),
            ("ON", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("no", false),
            ("NO", false),
            ("off", false),
            ("Off", false),
        ] {
            let v = value_from_text(spec, text, &file()).unwrap();
            assert_eq!(v.to_bool(), Some(want), "spelling {text}");
        }
        let err = value_from_text(spec, "maybe", &file()).unwrap_err();
        assert!(err.to_string().contains("maybe"));
    }

    #[test]
    fn lists_split_and_drop_blanks() {
        let cmds = value_from_text(
            key_spec("verify_cmds").unwrap(),
            " cargo test |  | cargo clippy -- -D warnings ",
            &file(),
        )
        .unwrap();
        let cmds: Vec<String> = cmds.deserialize().unwrap();
        assert_eq!(cmds, ["cargo test", "cargo clippy -- -D warnings"]);
        let files =
            value_from_text(key_spec("context_files").unwrap(), "a.md   b/c.md", &file()).unwrap();
        let files: Vec<String> = files.deserialize().unwrap();
        assert_eq!(files, ["a.md", "b/c.md"]);
    }

    #[test]
    fn empty_is_unset_for_optional_keys_and_an_error_for_required_ones() {
        let v = value_from_text(key_spec("base_branch").unwrap(), "", &file()).unwrap();
        assert_eq!(v.deserialize::<Option<String>>().unwrap(), None);
        let err = value_from_text(key_spec("model").unwrap(), " ", &file()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`model`") && text.contains("required"),
            "{text}"
        );
    }

    #[test]
    fn minimums_are_enforced() {
        let err = value_from_text(key_spec("iterations").unwrap(), "0", &file()).unwrap_err();
        assert!(err.to_string().contains("from 1"), "{err}");
        let err =
            value_from_text(key_spec("max_runs_per_workspace").unwrap(), "0", &file()).unwrap_err();
        assert!(err.to_string().contains("max_runs_per_workspace"), "{err}");
        assert!(value_from_text(key_spec("claude_retries").unwrap(), "0", &file()).is_ok());
    }

    #[test]
    fn choices_accept_any_case_and_list_the_options() {
        let v =
            value_from_text(key_spec("queue_policy").unwrap(), "Newest_First", &file()).unwrap();
        assert_eq!(v.into_string().unwrap(), "newest_first");
        let err =
            value_from_text(key_spec("merge_strategy").unwrap(), "rebase", &file()).unwrap_err();
        assert!(err.to_string().contains("squash, merge, none"), "{err}");
    }

    #[test]
    fn json_values_must_fit_the_key() {
        let src = ConfigSource::Override;
        let spec = key_spec("iterations").unwrap();
        let v = value_from_json(spec, &serde_json::json!(7), &src).unwrap();
        assert_eq!(v.deserialize::<u32>().unwrap(), 7);
        assert!(value_from_json(spec, &serde_json::json!("7"), &src).is_ok());
        assert!(value_from_json(spec, &serde_json::json!(true), &src).is_err());
        assert!(value_from_json(spec, &serde_json::json!(-1), &src).is_err());
        assert!(value_from_json(spec, &serde_json::json!(null), &src).is_err());
        let model = key_spec("model").unwrap();
        let err = value_from_json(model, &serde_json::json!(5), &src).unwrap_err();
        assert!(err.to_string().contains("override"), "{err}");
        let reviewer = key_spec("reviewer").unwrap();
        let v = value_from_json(reviewer, &serde_json::json!(false), &src).unwrap();
        assert_eq!(v.to_bool(), Some(false));
        let files = key_spec("context_files").unwrap();
        let v = value_from_json(files, &serde_json::json!(["a b.md", "c.md"]), &src).unwrap();
        assert_eq!(v.deserialize::<Vec<String>>().unwrap(), ["a b.md", "c.md"]);
        assert!(value_from_json(files, &serde_json::json!([1]), &src).is_err());
    }
}
