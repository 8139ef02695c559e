//! What the Codex and Gemini executors share: finding the CLI (a configured path or name, else
//! the copy `bin/install-codex` / `bin/install-gemini` put in the cache folder), splitting the
//! `*_args` config value, and reading an HTTP status out of an error message.

use std::path::{Path, PathBuf};

use crate::backend::ExecutorError;
use crate::impls::agent_process::ProgramKey;
use crate::impls::claude_executor::{effective_env, is_executable, program_exists};

/// One installable agent CLI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CliInstall {
    /// The default program name (`codex`, `gemini`).
    pub(crate) name: &'static str,
    /// The cache folder prefix: `<cache>/agent-loop/<prefix><version>/`.
    pub(crate) folder_prefix: &'static str,
    /// The pinned version (`.ci/<cli>-version`).
    pub(crate) pinned: &'static str,
    /// The config key and hint for a missing program.
    pub(crate) key: ProgramKey,
}

impl CliInstall {
    /// The CLI the install script put under `${XDG_CACHE_HOME:-$HOME/.cache}/agent-loop/`:
    /// the pinned version first, else the newest other one.
    pub(crate) fn installed(&self) -> Option<PathBuf> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        self.installed_in(&cache)
    }

    /// [`CliInstall::installed`] under the cache directory `cache`.
    pub(crate) fn installed_in(&self, cache: &Path) -> Option<PathBuf> {
        let root = cache.join("agent-loop");
        let binary = |dir: &Path| {
            let bin = dir.join("node_modules/.bin").join(self.name);
            is_executable(&bin).then_some(bin)
        };
        let pinned = root.join(format!("{}{}", self.folder_prefix, self.pinned.trim()));
        if let Some(bin) = binary(&pinned) {
            return Some(bin);
        }
        let mut others: Vec<PathBuf> = std::fs::read_dir(&root)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(self.folder_prefix)
            })
            .map(|e| e.path())
            .collect();
        others.sort();
        others.iter().rev().find_map(|dir| binary(dir))
    }

    /// The program to start for the configured `bin`: itself when it exists (a path, or a
    /// name on the agent's `PATH`); the default name missing from `PATH` falls back to the
    /// installed copy.
    pub(crate) fn resolve(
        &self,
        bin: &str,
        env: &[(String, String)],
        workdir: &Path,
    ) -> Result<String, ExecutorError> {
        let path_var = effective_env(env, "PATH");
        if program_exists(bin, path_var.as_deref(), workdir) {
            return Ok(bin.to_owned());
        }
        if bin == self.name
            && let Some(found) = self.installed()
        {
            return Ok(found.to_string_lossy().into_owned());
        }
        Err(ExecutorError::NotFound {
            program: bin.to_owned(),
            key: self.key.key.into(),
            hint: self.key.hint.into(),
        })
    }
}

/// Splits a `*_args` config value into words (quotes as in `agent_cmd`). The error says what
/// is wrong with the value.
pub(crate) fn split_args(key: &str, value: Option<&str>) -> Result<Vec<String>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    crate::impls::command_executor::split_words(value)
        .map_err(|why| format!("{key} `{value}` cannot be split into words: {why}"))
}

/// The HTTP status an error message names: `status 401`, `"code":401`, `code: 429`,
/// `API Error: 529`, `HTTP 503`. `None` when none is found.
pub(crate) fn status_in(text: &str) -> Option<u16> {
    const MARKERS: &[&str] = &[
        "status ",
        "status: ",
        "\"code\":",
        "\"code\": ",
        "code: ",
        "api error: ",
        "http ",
        "status code ",
    ];
    let lower = text.to_lowercase();
    MARKERS.iter().find_map(|m| {
        lower.match_indices(m).find_map(|(at, _)| {
            let digits: String = lower[at + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits
                .parse::<u16>()
                .ok()
                .filter(|s| digits.len() == 3 && (400..600).contains(s))
        })
    })
}

/// A non-negative integer field given as a number or a numeric string.
pub(crate) fn uint(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_messages() {
        assert_eq!(
            status_in("unexpected status 401 Unauthorized: bad key, url: http://x/v1/responses"),
            Some(401)
        );
        assert_eq!(
            status_in(r#"[API Error: {"error":{"message":"bad key","code":401}}]"#),
            Some(401)
        );
        assert_eq!(status_in("got status: 503 Service Unavailable"), Some(503));
        assert_eq!(status_in("API Error: 529 overloaded"), Some(529));
        assert_eq!(status_in("exit status 1"), None);
        assert_eq!(status_in("status 2000"), None);
        assert_eq!(status_in("nothing here"), None);
    }

    #[test]
    fn args_split_like_agent_cmd() {
        assert_eq!(split_args("codex_args", None), Ok(Vec::new()));
        assert_eq!(
            split_args("codex_args", Some(r#"-c 'a={b="c d"}' --x"#)),
            Ok(vec!["-c".into(), r#"a={b="c d"}"#.into(), "--x".into()])
        );
        let err = split_args("gemini_args", Some("'open")).unwrap_err();
        assert!(err.contains("gemini_args"), "{err}");
    }

    #[test]
    fn installed_copy_is_found_for_the_default_name_only() {
        let cache = tempfile::tempdir().unwrap();
        let ws = tempfile::tempdir().unwrap();
        let cli = CliInstall {
            name: "fakecli",
            folder_prefix: "fakecli-",
            pinned: "1.2.3\n",
            key: ProgramKey {
                key: "fakecli_bin",
                hint: "install it",
            },
        };
        assert_eq!(cli.installed_in(cache.path()), None);
        let dir = cache
            .path()
            .join("agent-loop/fakecli-1.0.0/node_modules/.bin");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("fakecli");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Not the pinned version, but the only one.
        assert_eq!(cli.installed_in(cache.path()), Some(bin.clone()));
        let env = [("PATH".to_owned(), "/nonexistent".to_owned())];
        let err = cli.resolve("other", &env, ws.path()).unwrap_err();
        assert!(err.to_string().contains("fakecli_bin"), "{err}");
        let env = [("PATH".to_owned(), dir.to_string_lossy().into_owned())];
        assert_eq!(cli.resolve("fakecli", &env, ws.path()).unwrap(), "fakecli");
    }
}
