//! What a config key accepts ([`KeySpec`], [`ValueKind`]) and the conversion of a raw value
//! (text from a file or a flag, JSON from the HTTP API or a stored run) into a typed figment
//! value. The keys themselves are declared once, in `decl.rs`.
//!
//! Values are typed here, per layer, rather than by figment at extraction time: only here do
//! we still know the value as the user wrote it and the file it came from, which every error
//! must name.

use figment::value::{Empty, Tag, Value};

use crate::error::{ConfigError, ConfigSource};

/// What a key accepts; decides how raw text and JSON are turned into a typed value, and what
/// is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ValueKind {
    /// A path; must not be empty.
    Path,
    /// A path; empty means unset.
    OptPath,
    /// Free text; must not be empty.
    Text,
    /// Free text; empty means unset.
    OptText,
    /// A branch name git accepts (`git check-ref-format --branch`); empty means unset.
    OptBranch,
    /// The start of a branch name: with a name appended it must be a valid branch name.
    BranchPrefix,
    /// Paths separated by whitespace (a JSON array in JSON).
    PathList,
    /// Shell commands separated by `|` (a JSON array in JSON); blanks dropped.
    CmdList,
    /// `true/false/1/0/yes/no/on/off`, any case.
    Bool,
    /// A whole number from `min` to `max`.
    U32 { min: u32, max: u32 },
    /// A whole number of at least `min`; empty means unset.
    OptU32 { min: u32 },
    /// A whole number (bytes).
    U64,
    /// A whole number; empty means unset.
    OptU64,
    /// An amount in US dollars (a decimal number >= 0); empty means unset.
    OptUsd,
    /// A number of seconds from 0 to `max`.
    Secs { max: u64 },
    /// One of the listed spellings (any case).
    Choice(&'static [&'static str]),
}

/// One configuration key: its name, what it accepts and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The key, as written in files, flags and JSON.
    pub key: &'static str,
    /// What the key does, for `--help`, README and the docs.
    pub description: &'static str,
    kind: ValueKind,
}

impl KeySpec {
    pub(super) const fn new(key: &'static str, kind: ValueKind, description: &'static str) -> Self {
        Self {
            key,
            description,
            kind,
        }
    }

    /// A short human description of the accepted values, e.g. `integer >= 1` or
    /// `exact|trailing`.
    pub fn accepts(&self) -> String {
        match self.kind {
            ValueKind::Path => "path".to_owned(),
            ValueKind::OptPath => "path (empty = unset)".to_owned(),
            ValueKind::Text => "text".to_owned(),
            ValueKind::OptText => "text (empty = unset)".to_owned(),
            ValueKind::OptBranch => "branch name (empty = unset)".to_owned(),
            ValueKind::BranchPrefix => "start of a branch name".to_owned(),
            ValueKind::PathList => "space-separated paths".to_owned(),
            ValueKind::CmdList => "commands separated by `|`".to_owned(),
            ValueKind::Bool => "true|false|1|0|yes|no|on|off".to_owned(),
            ValueKind::U32 { min, max } if max == u32::MAX => format!("integer >= {min}"),
            ValueKind::U32 { min, max } => format!("integer {min}..={max}"),
            ValueKind::OptU32 { min } => format!("integer >= {min} (empty = unset)"),
            ValueKind::U64 => "integer >= 0".to_owned(),
            ValueKind::OptU64 => "integer >= 0 (empty = unset)".to_owned(),
            ValueKind::OptUsd => "US dollars, e.g. 2.50 (empty = unset)".to_owned(),
            ValueKind::Secs { max } => format!("seconds 0..={max}"),
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

    /// The largest accepted value of a number key (seconds included).
    pub fn max(&self) -> Option<u64> {
        match self.kind {
            ValueKind::U32 { max, .. } => Some(u64::from(max)),
            ValueKind::OptU32 { .. } => Some(u64::from(u32::MAX)),
            ValueKind::U64 | ValueKind::OptU64 => Some(u64::MAX),
            ValueKind::Secs { max } => Some(max),
            _ => None,
        }
    }

    /// True when an empty value means "unset" rather than being an error.
    pub fn is_optional(&self) -> bool {
        matches!(
            self.kind,
            ValueKind::OptPath
                | ValueKind::OptText
                | ValueKind::OptBranch
                | ValueKind::OptU32 { .. }
                | ValueKind::OptU64
                | ValueKind::OptUsd
                | ValueKind::PathList
                | ValueKind::CmdList
        )
    }
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
            ValueKind::OptPath
            | ValueKind::OptText
            | ValueKind::OptBranch
            | ValueKind::OptU32 { .. }
            | ValueKind::OptU64
            | ValueKind::OptUsd => Ok(none()),
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
        ValueKind::OptBranch => match crate::naming::branch_name_problem(raw) {
            None => Ok(Value::from(raw)),
            Some(rule) => Err(invalid(spec, raw, source, rule.to_owned())),
        },
        ValueKind::BranchPrefix => {
            match crate::naming::branch_name_problem(&format!("{raw}name")) {
                None => Ok(Value::from(raw)),
                Some(rule) => Err(invalid(
                    spec,
                    raw,
                    source,
                    format!("with a run name appended it must be a valid branch name: {rule}"),
                )),
            }
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
        ValueKind::U32 { min, max } => match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Value::from(n)),
            _ => Err(invalid(
                spec,
                raw,
                source,
                format!("expected a whole number from {min} to {max}"),
            )),
        },
        ValueKind::OptU32 { min } => match text.parse::<u32>() {
            Ok(n) if n >= min => Ok(Value::from(n)),
            _ => Err(invalid(
                spec,
                raw,
                source,
                format!("expected a whole number from {min} to {}", u32::MAX),
            )),
        },
        ValueKind::Secs { max } => match text.parse::<u64>() {
            Ok(n) if n <= max => Ok(Value::from(n)),
            _ => Err(invalid(
                spec,
                raw,
                source,
                format!(
                    "expected a number of seconds from 0 to {max} (the limit of `{}`)",
                    spec.key
                ),
            )),
        },
        ValueKind::OptU64 => text.parse::<u64>().map(Value::from).map_err(|_| {
            invalid(
                spec,
                raw,
                source,
                format!("expected a whole number from 0 to {}", u64::MAX),
            )
        }),
        ValueKind::OptUsd => match text.trim_start_matches('$').parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(Value::from(n)),
            _ => Err(invalid(
                spec,
                raw,
                source,
                "expected an amount in US dollars, a number >= 0 such as 2.50".to_owned(),
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
            ValueKind::U32 { .. }
            | ValueKind::OptU32 { .. }
            | ValueKind::U64
            | ValueKind::OptU64
            | ValueKind::OptUsd
            | ValueKind::Secs { .. } => value_from_text(spec, &n.to_string(), source),
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
    use crate::config::decl::{KEY_SPECS, KEYS, key_spec};

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

    #[test]
    fn every_duration_key_has_a_maximum_named_in_the_error() {
        let durations: Vec<&KeySpec> = KEY_SPECS
            .iter()
            .filter(|s| matches!(s.kind, ValueKind::Secs { .. }))
            .collect();
        let names: Vec<&str> = durations.iter().map(|s| s.key).collect();
        for key in [
            "heartbeat_sec",
            "claude_timeout_sec",
            "claude_idle_timeout_sec",
            "verify_timeout_sec",
            "claude_retry_backoff_sec",
            "claude_transient_backoff_max_sec",
            "warn_iteration_sec",
        ] {
            assert!(names.contains(&key), "{key} is not a duration key");
        }
        // Every `*_sec` key is one of them.
        for spec in KEY_SPECS.iter().filter(|s| s.key.ends_with("_sec")) {
            assert!(names.contains(&spec.key), "{} has no maximum", spec.key);
        }
        for spec in durations {
            let max = spec.max().unwrap();
            assert!(value_from_text(spec, &max.to_string(), &file()).is_ok());
            for too_big in [max + 1, 1 << 63, u64::MAX] {
                let err = value_from_text(spec, &too_big.to_string(), &file()).unwrap_err();
                let text = err.to_string();
                assert!(
                    text.contains(spec.key) && text.contains(&max.to_string()),
                    "{text}"
                );
                let json = serde_json::json!(too_big);
                assert!(value_from_json(spec, &json, &ConfigSource::Override).is_err());
            }
        }
    }

    #[test]
    fn branch_keys_are_refused_with_the_rule() {
        for (key, value) in [
            ("merge_target_branch", "../../x"),
            ("merge_target_branch", "HEAD"),
            ("merge_target_branch", "--upload-pack=touch /tmp/x"),
            ("run_branch_prefix", "-x/"),
            ("run_branch_prefix", "a..b/"),
            ("base_branch", "--output=/tmp/x"),
            ("base_branch", "a b"),
        ] {
            let err = value_from_text(key_spec(key).unwrap(), value, &file()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(key) && text.contains(value) && text.contains("branch name"),
                "{text}"
            );
        }
        for (key, value) in [
            ("merge_target_branch", "agent/x"),
            ("run_branch_prefix", "run/"),
            ("run_branch_prefix", "loop-"),
            ("base_branch", "develop"),
        ] {
            assert!(value_from_text(key_spec(key).unwrap(), value, &file()).is_ok());
        }
    }
}
