//! The environment of agents and verification commands: an allow-list of this process's
//! environment plus what a run's config passes (`agent_env`), and never loopd's own
//! variables (`LOOPD_TOKEN`, any `LOOPD_*`), so an agent that prints `env` leaks no secret
//! of the daemon into its logs.

use std::ffi::{OsStr, OsString};

/// Variables passed through by name.
const ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TMPDIR",
    "TZ",
    "EMAIL",
    "IS_SANDBOX",
    // Proxies and certificates, so the agent reaches its API where the daemon does.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    // Where tools keep their configuration and caches.
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    // git: the identity and which configuration files it reads.
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    // The Claude CLI on Bedrock or Vertex.
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUD_ML_REGION",
    // The Gemini CLI: its key, endpoint and Vertex settings.
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
];

/// Variables passed through by prefix.
const ALLOWED_PREFIXES: &[&str] = &[
    "LC_",
    "ANTHROPIC_",
    "CLAUDE_",
    // The Codex CLI (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `CODEX_HOME`) and the Gemini CLI
    // (`GEMINI_API_KEY`, `GEMINI_CLI_HOME`).
    "OPENAI_",
    "CODEX_",
    "GEMINI_",
    "GIT_AUTHOR_",
    "GIT_COMMITTER_",
    "VERTEX_REGION_",
];

/// The prefix of loopd's own variables, never passed to an agent or a command.
pub const DAEMON_PREFIX: &str = "LOOPD_";

/// True when the variable `name` of this process's environment is passed to agents and
/// verification commands without being configured: the allow-list (`PATH`, `HOME`, `USER`,
/// `LANG`/`LC_*`, `TERM`, `TMPDIR`, `SHELL`, `ANTHROPIC_*`, `CLAUDE_*`, `OPENAI_*`, `CODEX_*`,
/// `GEMINI_*`, `GOOGLE_API_KEY`, `IS_SANDBOX`, the git identity, proxies, ...), never `LOOPD_*`.
pub fn is_allowed(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    !name.starts_with(DAEMON_PREFIX)
        && (ALLOWED.contains(&name) || ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// The allow-listed part of this process's environment.
pub(super) fn allowed_inherited() -> Vec<(OsString, OsString)> {
    std::env::vars_os().filter(|(k, _)| is_allowed(k)).collect()
}

/// One entry of the `agent_env` config key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEnvEntry {
    /// `NAME`: passed through from the daemon's environment when set there.
    Pass(String),
    /// `NAME=value`: set to this value.
    Set(String, String),
}

/// Parses the `agent_env` config value: space-separated `NAME`s to pass through and
/// `NAME=value` pairs. Refuses names that are not shell variable names and loopd's own
/// (`LOOPD_*`), naming the entry.
pub fn parse_agent_env(value: &str) -> Result<Vec<AgentEnvEntry>, String> {
    value
        .split_whitespace()
        .map(|item| {
            let (name, set) = match item.split_once('=') {
                Some((name, v)) => (name, Some(v)),
                None => (item, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "agent_env: `{item}` is not NAME or NAME=value with a variable name of \
                     letters, digits and `_`"
                ));
            }
            if name.starts_with(DAEMON_PREFIX) {
                return Err(format!(
                    "agent_env: `{name}` is one of loopd's own variables ({DAEMON_PREFIX}*), \
                     which are never passed to agents"
                ));
            }
            Ok(match set {
                Some(v) => AgentEnvEntry::Set(name.to_owned(), v.to_owned()),
                None => AgentEnvEntry::Pass(name.to_owned()),
            })
        })
        .collect()
}

/// The variables the `agent_env` entries add: passed-through names that are set in this
/// process's environment (with their values) and the pairs.
pub fn agent_env_vars(entries: &[AgentEnvEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| match e {
            AgentEnvEntry::Pass(name) => std::env::var(name).ok().map(|v| (name.clone(), v)),
            AgentEnvEntry::Set(name, value) => Some((name.clone(), value.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_keeps_what_agents_need_and_never_loopd_variables() {
        for name in [
            "PATH",
            "HOME",
            "LC_ALL",
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_USE_BEDROCK",
            "IS_SANDBOX",
            "GIT_AUTHOR_NAME",
            "https_proxy",
        ] {
            assert!(is_allowed(OsStr::new(name)), "{name}");
        }
        for name in [
            "LOOPD_TOKEN",
            "LOOPD_LISTEN",
            "DATABASE_URL",
            "GITHUB_TOKEN",
            "GIT_DIR",
        ] {
            assert!(!is_allowed(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn agent_env_parses_names_and_pairs_and_refuses_loopd_and_bad_names() {
        assert_eq!(
            parse_agent_env(" OPENAI_API_KEY  MODE=fast\tEMPTY= ").unwrap(),
            [
                AgentEnvEntry::Pass("OPENAI_API_KEY".into()),
                AgentEnvEntry::Set("MODE".into(), "fast".into()),
                AgentEnvEntry::Set("EMPTY".into(), String::new()),
            ]
        );
        assert!(parse_agent_env("").unwrap().is_empty());
        let err = parse_agent_env("A LOOPD_TOKEN").unwrap_err();
        assert!(err.contains("LOOPD_TOKEN"), "{err}");
        let err = parse_agent_env("LOOPD_X=1").unwrap_err();
        assert!(err.contains("LOOPD_X"), "{err}");
        let err = parse_agent_env("1BAD").unwrap_err();
        assert!(err.contains("1BAD"), "{err}");
        let err = parse_agent_env("=v").unwrap_err();
        assert!(err.contains("`=v`"), "{err}");
    }

    #[test]
    fn passed_names_take_their_values_from_the_environment() {
        let entries = [
            AgentEnvEntry::Pass("PATH".into()),
            AgentEnvEntry::Pass("LOOP_SURELY_UNSET_VARIABLE_XYZ".into()),
            AgentEnvEntry::Set("MODE".into(), "fast".into()),
        ];
        let vars = agent_env_vars(&entries);
        assert_eq!(vars.len(), 2);
        assert_eq!(vars[0].0, "PATH");
        assert_eq!(vars[1], ("MODE".to_owned(), "fast".to_owned()));
    }
}
