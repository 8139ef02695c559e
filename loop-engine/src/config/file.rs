//! The `key=value` config file format (`.loop/config`, `--config FILE`, `LOOP_CONFIG`) and
//! its figment provider.
//!
//! The format is the one the original shell runner sourced: `key=value` lines, `#` comments,
//! optional quotes. Unknown keys only warn, so that a file shared between versions keeps
//! working; anything else that is wrong is an error naming file and line.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Provider};

use super::decl::key_spec;
use super::keys::value_from_text;
use super::layer::Layer;
use super::paths::{MAX_CONFIG_FILE_BYTES, read_user_file};
use crate::error::{ConfigError, ConfigSource};

/// A parsed `key=value` config file: typed values plus the warnings found while parsing.
/// Merge it into a [`figment::Figment`] like any provider.
#[derive(Clone, Debug)]
pub struct KeyValueFile {
    path: PathBuf,
    layer: Layer,
    warnings: Vec<String>,
}

/// Splits one line into key and value text; `Ok(None)` for blank and comment lines, `Err`
/// with the reason for a malformed line.
fn split_line(line: &str) -> Result<Option<(&str, &str)>, &'static str> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some((key, rest)) = trimmed.split_once('=') else {
        return Err("expected `key=value`");
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("the key before `=` is empty");
    }
    if key.contains(char::is_whitespace) {
        return Err("a key cannot contain spaces");
    }
    let value = rest.trim_start();
    if let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let inner = &value[1..];
        let Some(end) = inner.find(quote) else {
            return Err("the quoted value has no closing quote");
        };
        let after = inner[end + 1..].trim_start();
        if !after.is_empty() && !after.starts_with('#') {
            return Err("unexpected text after the closing quote");
        }
        return Ok(Some((key, &inner[..end])));
    }
    // An unquoted value ends at a `#` that follows whitespace: `iterations=5 # five`.
    let end = rest
        .char_indices()
        .find(|&(i, c)| c == '#' && rest[..i].ends_with(char::is_whitespace))
        .map_or(rest.len(), |(i, _)| i);
    Ok(Some((key, rest[..end].trim())))
}

impl KeyValueFile {
    /// Parses `text` as the contents of the file at `path` (used in messages only).
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Self, ConfigError> {
        let path = path.into();
        let source = ConfigSource::File(path.clone());
        let mut layer = Layer::new(source.clone());
        let mut warnings = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let (key, value) = match split_line(line) {
                Ok(Some(pair)) => pair,
                Ok(None) => continue,
                Err(reason) => {
                    return Err(ConfigError::Syntax {
                        path,
                        line: number,
                        text: line.trim().to_owned(),
                        reason: reason.to_owned(),
                    });
                }
            };
            let Some(spec) = key_spec(key) else {
                // Only a plausible key name is echoed: the file may be any file named by
                // path, whose contents must not come back in an answer.
                let plausible = key.len() <= 64
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let warning = if plausible {
                    format!(
                        "{}:{number}: unknown config key `{key}` (ignored)",
                        path.display()
                    )
                } else {
                    format!(
                        "{}:{number}: not a config key name (line ignored)",
                        path.display()
                    )
                };
                tracing::warn!(key, file = %path.display(), line = number, "unknown config key (ignored)");
                warnings.push(warning);
                continue;
            };
            let typed = value_from_text(spec, value, &source).map_err(|err| match err {
                ConfigError::InvalidValue {
                    key,
                    value,
                    source_name,
                    reason,
                } => ConfigError::InvalidValue {
                    key,
                    value,
                    source_name,
                    reason: format!("{reason} (line {number})"),
                },
                other => other,
            })?;
            layer.insert(spec, typed);
        }
        Ok(Self {
            path,
            layer,
            warnings,
        })
    }

    /// Reads and parses the file at `path`, named `key` in errors (`config_file`,
    /// `.loop/config`); a missing file is an [`ConfigError::Io`]. Only a regular file of at
    /// most [`MAX_CONFIG_FILE_BYTES`] is read (never a FIFO or a device).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        match Self::read_if_exists_as("config_file", path)? {
            Some(file) => Ok(file),
            None => Err(ConfigError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        }
    }

    /// Like [`KeyValueFile::read`], but a missing file is `Ok(None)`.
    pub fn read_if_exists(path: &Path) -> Result<Option<Self>, ConfigError> {
        Self::read_if_exists_as(".loop/config", path)
    }

    fn read_if_exists_as(key: &str, path: &Path) -> Result<Option<Self>, ConfigError> {
        match read_user_file(key, path, MAX_CONFIG_FILE_BYTES)? {
            Some(text) => Self::parse(path, &text).map(Some),
            None => Ok(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line per unknown key, naming key, file and line.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The keys the file sets, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.layer.values().keys().map(String::as_str)
    }
}

impl Provider for KeyValueFile {
    fn metadata(&self) -> Metadata {
        self.layer.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.layer.data()
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::Serialized;

    use super::*;
    use crate::config::Config;

    fn load(text: &str) -> Config {
        let file = KeyValueFile::parse("/w/.loop/config", text).unwrap();
        Figment::from(Serialized::defaults(Config::default()))
            .merge(file)
            .extract()
            .unwrap()
    }

    #[test]
    fn comments_quotes_and_whitespace() {
        let config = load(
            "# a comment\n\
             \n\
             \t  model =  sonnet  \n\
             run_branch_prefix=\"agent/#1\"\n\
             run_naming_model=' dev # not a comment'\n\
             iterations=12 # a trailing comment\n\
             merge_target_branch = \"ship\"   # comment after quotes\n\
             worktree_path_template=../wt#{{ repo }}\n\
             claude_bin=/opt/claude\r\n\
             verify_cmds = cargo test | cargo clippy\n\
             context_files=a.md  b.md\n\
             prompt_file= # empty, so unset\n",
        );
        assert_eq!(config.model, "sonnet");
        assert_eq!(config.run_branch_prefix, "agent/#1");
        assert_eq!(config.run_naming_model, " dev # not a comment");
        assert_eq!(config.iterations, 12);
        assert_eq!(config.merge_target_branch.as_deref(), Some("ship"));
        assert_eq!(config.worktree_path_template, "../wt#{{ repo }}");
        assert_eq!(config.claude_bin, "/opt/claude");
        assert_eq!(config.verify_cmds, ["cargo test", "cargo clippy"]);
        assert_eq!(
            config.context_files,
            [PathBuf::from("a.md"), PathBuf::from("b.md")]
        );
        assert_eq!(config.prompt_file, None);
    }

    #[test]
    fn every_boolean_spelling_in_a_file() {
        for (text, want) in [
            ("true", true),
            ("false", false),
            ("1", true),
            ("0", false),
            ("yes", true),
            ("no", false),
            ("on", true),
            ("off", false),
            ("TRUE", true),
            ("Off", false),
            ("\"yes\"", true),
        ] {
            assert_eq!(load(&format!("reviewer={text}\n")).reviewer, want, "{text}");
        }
    }

    #[test]
    fn empty_required_value_is_an_error() {
        let err = KeyValueFile::parse("/w/c", "model=\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`model`") && text.contains("/w/c"), "{text}");
    }

    #[test]
    fn unknown_keys_warn_with_file_and_line() {
        let file = KeyValueFile::parse("/w/.loop/config", "model=opus\n# x\nshiny=1\n").unwrap();
        assert_eq!(
            file.warnings(),
            ["/w/.loop/config:3: unknown config key `shiny` (ignored)"]
        );
        assert_eq!(file.keys().collect::<Vec<_>>(), ["model"]);
    }

    #[test]
    fn line_without_equals_is_a_syntax_error() {
        let err = KeyValueFile::parse("/w/.loop/config", "model=opus\n\njust words\n").unwrap_err();
        match &err {
            ConfigError::Syntax { path, line, .. } => {
                assert_eq!(path, Path::new("/w/.loop/config"));
                assert_eq!(*line, 3);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().starts_with("/w/.loop/config:3:"), "{err}");
    }

    #[test]
    fn foreign_file_contents_are_not_echoed() {
        let err = KeyValueFile::parse("/etc/shadow", "root:$6$hash:19000\n").unwrap_err();
        assert!(!err.to_string().contains("$6$hash"), "{err}");
        let file = KeyValueFile::parse("/x", "Secret-Token-123=1\nsome_key=2\n").unwrap();
        let warnings = file.warnings.join("\n");
        assert!(!warnings.contains("Secret-Token-123"), "{warnings}");
        assert!(warnings.contains("`some_key`"), "{warnings}");
    }

    #[test]
    fn malformed_quotes_and_keys_are_syntax_errors() {
        for text in [
            "model=\"opus\n",
            "model='opus' extra\n",
            "=opus\n",
            "my key=1\n",
        ] {
            let err = KeyValueFile::parse("/w/c", text).unwrap_err();
            assert!(
                matches!(err, ConfigError::Syntax { line: 1, .. }),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn bad_number_names_key_value_file_and_line() {
        let err = KeyValueFile::parse("/w/.loop/config", "\n\nheartbeat_sec=5m\n").unwrap_err();
        let text = err.to_string();
        for part in ["heartbeat_sec", "5m", "/w/.loop/config", "line 3"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[test]
    fn bad_enum_lists_accepted_values() {
        let err = KeyValueFile::parse("/w/.loop/config", "completion_mode=fuzzy\n").unwrap_err();
        let text = err.to_string();
        for part in [
            "completion_mode",
            "fuzzy",
            "/w/.loop/config",
            "exact, trailing",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[test]
    fn missing_file_is_none_for_read_if_exists_and_an_error_for_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        assert!(KeyValueFile::read_if_exists(&path).unwrap().is_none());
        assert!(matches!(
            KeyValueFile::read(&path).unwrap_err(),
            ConfigError::Io { .. }
        ));
        std::fs::write(&path, "iterations=2\n").unwrap();
        let file = KeyValueFile::read_if_exists(&path).unwrap().unwrap();
        assert_eq!(file.path(), path);
        assert_eq!(file.keys().collect::<Vec<_>>(), ["iterations"]);
    }
}
