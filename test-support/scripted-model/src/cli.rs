//! Finding the real Claude Code CLI and pointing it at a scripted model: the one place the
//! end-to-end tests and `loopctl demo` share, so they agree on where the CLI is and how it is
//! isolated from the user's own settings.

use std::io;
use std::path::{Path, PathBuf};

/// The Claude CLI, if installed: `CLAUDE_BIN`, else `claude` on `PATH`
/// (`bin/install-claude` installs the pinned version; `loopctl demo` also looks in its folder).
pub fn find_claude() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CLAUDE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("claude"))
        .find(|p| p.is_file())
}

/// Says that a test skipped and why, on the process's stderr directly: the test harness
/// captures `eprintln!` (a passing test's output is never shown), but not a write to the
/// stderr handle, so the reason shows in `cargo test`'s and CI's output.
pub fn say_skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {why}");
}

/// What a test that needs the CLI should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaudeForTest {
    /// Run with this binary.
    Found(PathBuf),
    /// Skip, saying why (the CLI is missing and not required).
    Skip(String),
    /// Fail, saying why (`LOOP_REQUIRE_CLAUDE=1` and the CLI is missing).
    Required(String),
}

/// Finds the CLI for an end-to-end test: missing is a skip, unless `LOOP_REQUIRE_CLAUDE=1`
/// (as in CI), where it is a failure.
pub fn claude_for_test() -> ClaudeForTest {
    if let Some(bin) = find_claude() {
        return ClaudeForTest::Found(bin);
    }
    let why = "the Claude CLI was not found (set CLAUDE_BIN or put `claude` on PATH; \
               bin/install-claude installs the pinned version)"
        .to_owned();
    if std::env::var("LOOP_REQUIRE_CLAUDE").as_deref() == Ok("1") {
        ClaudeForTest::Required(format!("LOOP_REQUIRE_CLAUDE=1 but {why}"))
    } else {
        ClaudeForTest::Skip(why)
    }
}

/// A wrapper script that runs the CLI against a scripted model only.
#[derive(Clone, Debug, Default)]
pub struct Wrapper {
    /// The real CLI.
    pub claude: PathBuf,
    /// `ANTHROPIC_BASE_URL`: the scripted model.
    pub base_url: String,
    /// A private `HOME` (the user's `~/.claude` settings must not leak in), if any.
    pub home: Option<PathBuf>,
    /// An isolated git identity and configuration for the commits the model's tool calls make.
    pub isolated_git: bool,
    /// More `export NAME='value'` lines (e.g. `IS_SANDBOX`, `CLAUDE_CODE_MAX_RETRIES`).
    pub exports: Vec<(String, String)>,
}

impl Wrapper {
    /// The script's text.
    pub fn script(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n# Runs the real Claude CLI against a scripted model, nothing else.\n\
             unset ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN CLAUDE_CODE_USE_BEDROCK CLAUDE_CODE_USE_VERTEX\n",
        );
        s.push_str(&format!("export ANTHROPIC_BASE_URL='{}'\n", self.base_url));
        s.push_str(
            "export ANTHROPIC_API_KEY=test\nexport CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n",
        );
        if let Some(home) = &self.home {
            s.push_str(&format!("export HOME='{}'\n", home.display()));
        }
        if self.isolated_git {
            s.push_str(
                "export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null\n\
                 export GIT_AUTHOR_NAME='Scripted Model' GIT_AUTHOR_EMAIL=model@example.invalid\n\
                 export GIT_COMMITTER_NAME='Scripted Model' GIT_COMMITTER_EMAIL=model@example.invalid\n",
            );
        }
        for (k, v) in &self.exports {
            s.push_str(&format!("export {k}=\"{v}\"\n"));
        }
        s.push_str(&format!("exec '{}' \"$@\"\n", self.claude.display()));
        s
    }

    /// Writes the script to `path` (mode 0755), creating the private `HOME` if one is set.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(home) = &self.home {
            std::fs::create_dir_all(home)?;
        }
        std::fs::write(path, self.script())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_points_the_cli_at_the_model_and_nowhere_else() {
        let w = Wrapper {
            claude: "/opt/claude".into(),
            base_url: "http://127.0.0.1:9".into(),
            home: Some("/tmp/h".into()),
            isolated_git: true,
            exports: vec![("IS_SANDBOX".into(), "1".into())],
        };
        let s = w.script();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("unset ANTHROPIC_AUTH_TOKEN"));
        assert!(s.contains("export ANTHROPIC_BASE_URL='http://127.0.0.1:9'\n"));
        assert!(s.contains("export HOME='/tmp/h'\n"));
        assert!(s.contains("GIT_CONFIG_GLOBAL=/dev/null"));
        assert!(s.contains("export IS_SANDBOX=\"1\"\n"));
        assert!(s.ends_with("exec '/opt/claude' \"$@\"\n"));
        let bare = Wrapper {
            claude: "/c".into(),
            base_url: "http://x".into(),
            ..Wrapper::default()
        }
        .script();
        assert!(!bare.contains("HOME="));
        assert!(!bare.contains("GIT_"));
    }
}
