//! The default [`Executor`]: the Claude Code CLI in print mode with stream-json output.
//!
//! `claude -p --dangerously-skip-permissions --model <model> --output-format stream-json
//! --verbose <prompt>` runs in the worktree, in its own process group, with stdin closed and
//! the daemon's environment plus `ExecRequest.env`. What the run means is judged from the final
//! `result` line (see [`Verdict::of`]), never from the exit code alone. The naming call
//! ([`ExecPurpose::Naming`](crate::backend::ExecPurpose)) gets no tools at all (`--tools ""`)
//! and so no `--dangerously-skip-permissions`: it only answers a label.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::{
    ExecContext, ExecOutcome, ExecPurpose, ExecRequest, Executor, ExecutorError, Verdict,
};
use crate::impls::agent_process::{ProgramKey, run_measured};
use crate::outcome::ROOT_REFUSAL_FIX;
use crate::process::{self, Cmd};

const CLAUDE_KEY: ProgramKey = ProgramKey {
    key: "claude_bin",
    hint: "install the Claude Code CLI (`npm install -g @anthropic-ai/claude-code`) or set claude_bin to its path",
};

/// The tools a postmortem agent gets: it reads files, never writes them or runs commands.
const READ_ONLY_TOOLS: &str = "Read,Grep,Glob";

/// The Claude Code version `bin/install-claude` installs (`.ci/claude-version`).
const PINNED_VERSION: &str = include_str!("../../../.ci/claude-version");

/// The Claude CLI that `bin/install-claude` installed, if any: under
/// `${XDG_CACHE_HOME:-$HOME/.cache}/agent-loop/claude-code-<version>/`, the pinned version
/// first, else the newest other one. The default `claude_bin` (`claude`) falls back to it when
/// `claude` is not on `PATH`, so loopd and `loopctl demo` find the CLI that script installed
/// without an `export CLAUDE_BIN=...`.
pub fn installed_claude() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    installed_claude_in(&cache)
}

/// [`installed_claude`] under the cache directory `cache`.
pub(crate) fn installed_claude_in(cache: &Path) -> Option<PathBuf> {
    let root = cache.join("agent-loop");
    let binary = |dir: &Path| -> Option<PathBuf> {
        let bin = dir.join("node_modules/.bin/claude");
        if is_executable(&bin) {
            return Some(bin);
        }
        // Installed with scripts disabled: the platform package's binary (as the script does).
        let mut platform: Vec<PathBuf> = std::fs::read_dir(dir.join("node_modules/@anthropic-ai"))
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("claude-code-"))
            .map(|e| e.path().join("claude"))
            .filter(|p| is_executable(p))
            .collect();
        platform.sort();
        platform.pop()
    };
    let pinned = root.join(format!("claude-code-{}", PINNED_VERSION.trim()));
    if let Some(bin) = binary(&pinned) {
        return Some(bin);
    }
    let mut others: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("claude-code-"))
        .map(|e| e.path())
        .collect();
    others.sort();
    others.iter().rev().find_map(|dir| binary(dir))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The program to start for `claude_bin`: itself when it exists (a path, or a name on
/// `path_var`); for the default name `claude` missing from `PATH`, the CLI `bin/install-claude`
/// installed (`installed`). `None` when there is nothing to start.
fn resolve_program(
    claude_bin: &str,
    path_var: Option<&str>,
    workdir: &Path,
    installed: impl FnOnce() -> Option<PathBuf>,
) -> Option<String> {
    if program_exists(claude_bin, path_var, workdir) {
        return Some(claude_bin.to_owned());
    }
    if claude_bin == "claude" {
        return installed().map(|p| p.to_string_lossy().into_owned());
    }
    None
}

/// Runs the Claude Code CLI.
#[derive(Clone, Debug)]
pub struct ClaudeExecutor {
    claude_bin: String,
    /// The effective uid to assume (tests); `None` reads the real one at each call.
    euid: Option<u32>,
}

impl ClaudeExecutor {
    /// An executor running `claude_bin` (a program on `PATH`, or a path; the default `claude`
    /// also falls back to [`installed_claude`]).
    pub fn new(claude_bin: impl Into<String>) -> Self {
        Self {
            claude_bin: claude_bin.into(),
            euid: None,
        }
    }

    /// The arguments for `req`: print mode, no permission prompts, the model, stream-json.
    /// The naming call runs with no tools (`--tools ""`) instead of skipping permissions. A
    /// postmortem gets the read-only tools only (`--tools Read,Grep,Glob -- <prompt>`): it
    /// reads the run's files and must not change the worktree.
    pub fn args(req: &ExecRequest) -> Vec<String> {
        let mut args: Vec<String> = vec!["-p".into()];
        if req.purpose == ExecPurpose::Naming {
            args.extend(["--tools".into(), String::new()]);
        } else {
            args.push("--dangerously-skip-permissions".into());
        }
        args.extend([
            "--model".into(),
            req.model.clone(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
        ]);
        if req.purpose == ExecPurpose::Postmortem {
            // `--tools` takes several values: `--` ends them, or the prompt would be one.
            args.extend(["--tools".into(), READ_ONLY_TOOLS.into(), "--".into()]);
        }
        args.push(req.prompt.clone());
        args
    }
}

#[async_trait]
impl Executor for ClaudeExecutor {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let path_var = effective_env(&req.env, "PATH");
        let Some(program) = resolve_program(
            &self.claude_bin,
            path_var.as_deref(),
            &req.workdir,
            installed_claude,
        ) else {
            return Err(ExecutorError::NotFound {
                program: self.claude_bin.clone(),
                key: CLAUDE_KEY.key.into(),
                hint: CLAUDE_KEY.hint.into(),
            });
        };
        let euid = self.euid.or_else(process::effective_uid);
        let sandbox = effective_env(&req.env, "IS_SANDBOX");
        if let Some(detail) = root_refusal(euid, sandbox.as_deref()) {
            return Err(ExecutorError::Fatal {
                detail,
                source: None,
            });
        }
        let cmd = Cmd::new(&program, &req.workdir).args(Self::args(&req));
        let run = run_measured(cmd, CLAUDE_KEY, &req, &ctx).await?;
        tracing::debug!(
            step_id = %req.step_id,
            exit_code = run.outcome.exit_code,
            output_bytes = run.outcome.output_bytes,
            peak_retained = run.peak_retained,
            "claude finished"
        );
        Ok(run.outcome)
    }

    /// The Claude CLI must end with its stream-json `result` line: exit code 0 without one
    /// means it was interrupted ([`FailureKind::NoResult`](crate::backend::FailureKind)).
    fn judge(&self, outcome: &ExecOutcome) -> Verdict {
        Verdict::of(outcome, true)
    }
}

/// The value `key` will have in the agent's environment: the last override in `env`, else the
/// inherited one.
pub(crate) fn effective_env(env: &[(String, String)], key: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned()))
}

/// Why the Claude CLI would refuse to start, if it would: as root it rejects
/// `--dangerously-skip-permissions` unless `IS_SANDBOX` is exactly `1` (`yes` is refused).
/// `euid` is the effective uid (`None`: unknown, assumed fine); `is_sandbox` the effective
/// value of `IS_SANDBOX`.
pub(crate) fn root_refusal(euid: Option<u32>, is_sandbox: Option<&str>) -> Option<String> {
    if euid != Some(0) || is_sandbox == Some("1") {
        return None;
    }
    let current = match is_sandbox {
        Some(v) => format!("IS_SANDBOX is `{v}`"),
        None => "IS_SANDBOX is not set".to_owned(),
    };
    Some(format!(
        "loopd runs as root, and the Claude CLI refuses --dangerously-skip-permissions as root unless IS_SANDBOX=1 ({current}): {ROOT_REFUSAL_FIX}"
    ))
}

/// True when `program` names an executable file: a path (relative to `workdir`) when it holds
/// a `/`, else a file in one of the `path_var` directories.
pub(crate) fn program_exists(program: &str, path_var: Option<&str>, workdir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return false;
    }
    if program.contains('/') {
        return is_exec(&workdir.join(program));
    }
    std::env::split_paths(OsStr::new(path_var.unwrap_or_default()))
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                workdir.to_owned()
            } else {
                workdir.join(dir)
            }
        })
        .any(|dir| is_exec(&dir.join(program)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FailureKind;

    #[test]
    fn the_default_name_falls_back_to_the_installed_cli() {
        let cache = tempfile::tempdir().expect("tempdir");
        let ws = tempfile::tempdir().expect("tempdir");
        assert_eq!(installed_claude_in(cache.path()), None);
        let dir = cache.path().join(format!(
            "agent-loop/claude-code-{}/node_modules/.bin",
            PINNED_VERSION.trim()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let bin = dir.join("claude");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(installed_claude_in(cache.path()), Some(bin.clone()));
        let installed = || installed_claude_in(cache.path());
        // Not on PATH: the installed one.
        assert_eq!(
            resolve_program("claude", Some("/nonexistent"), ws.path(), installed),
            Some(bin.to_string_lossy().into_owned())
        );
        // A configured other program gets no fallback.
        assert_eq!(
            resolve_program("my-claude", Some("/nonexistent"), ws.path(), installed),
            None
        );
        // On PATH: itself.
        assert_eq!(
            resolve_program("claude", dir.to_str(), ws.path(), || None),
            Some("claude".to_owned())
        );
    }
    use crate::backend::{ExecPurpose, ExecSignal, Termination};
    use crate::domain::{RunId, StepId};
    use tokio_util::sync::CancellationToken;

    fn request(dir: &Path) -> ExecRequest {
        ExecRequest {
            run_id: RunId::new(),
            step_id: StepId::new(),
            purpose: ExecPurpose::Implementation,
            label: "1".into(),
            prompt: "do the task".into(),
            model: "haiku".into(),
            workdir: dir.to_owned(),
            log_path: dir.join("logs/iter-01.log"),
            timeout: Some(std::time::Duration::from_secs(30)),
            idle_timeout: None,
            env: vec![("IS_SANDBOX".into(), "1".into())],
            limits: Default::default(),
        }
    }

    #[test]
    fn the_naming_call_gets_no_tools_and_skips_no_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut req = request(dir.path());
        req.purpose = ExecPurpose::Naming;
        let args = ClaudeExecutor::args(&req);
        assert_eq!(&args[..3], ["-p", "--tools", ""]);
        assert!(!args.iter().any(|a| a == "--dangerously-skip-permissions"));
        req.purpose = ExecPurpose::Review;
        assert_eq!(
            ClaudeExecutor::args(&req)[1],
            "--dangerously-skip-permissions"
        );
    }

    /// A fake `claude` printing `body` (shell) after recording its arguments.
    fn fake_claude(dir: &Path, body: &str) -> String {
        let path = dir.join("claude");
        std::fs::write(
            &path,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args.txt\"\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.to_string_lossy().into_owned()
    }

    fn executor(bin: String) -> ClaudeExecutor {
        // Not root, so the outcome does not depend on who runs the tests.
        ClaudeExecutor {
            euid: Some(1000),
            ..ClaudeExecutor::new(bin)
        }
    }

    const STREAM: &str = r#"cat <<'EOF'
{"type":"system","subtype":"init","cwd":"/w","session_id":"s","tools":["Bash"],"model":"claude-haiku"}
{"type":"assistant","message":{"content":[{"type":"text","text":"working \udcff"}]}}
{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":600,"error_status":529,"error":"overloaded_error"}
{"type":"user","message":{"content":[{"type":"tool_result","content":"ok"}]}}
{"type":"result","subtype":"success","is_error":false,"result":"Completed task 1. 0 tasks remain.","num_turns":3,"duration_ms":900,"duration_api_ms":800,"total_cost_usd":0.01,"usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":30,"cache_creation_input_tokens":40},"api_error_status":null}
EOF"#;

    #[tokio::test]
    async fn stream_json_run() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_claude(dir.path(), STREAM);
        let (output, mut chunks) = tokio::sync::broadcast::channel(64);
        let (signals, mut sig_rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = ExecContext {
            output,
            signals,
            cancel: CancellationToken::new(),
        };
        let req = request(dir.path());
        let outcome = executor(bin).execute(req.clone(), ctx).await.unwrap();

        assert_eq!(outcome.exit_code, 0);
        assert_eq!(outcome.termination, Some(Termination::Exited));
        let result = outcome.result.clone().unwrap();
        assert!(!result.is_error);
        assert_eq!(result.text, "Completed task 1. 0 tasks remain.");
        assert_eq!(result.usage.num_turns, Some(3));
        assert_eq!(result.usage.output_tokens, Some(20));
        assert_eq!(result.usage.cost_usd, Some(0.01));
        assert_eq!(outcome.output_text, "Completed task 1. 0 tasks remain.");
        assert_eq!(outcome.output_lines, 5);
        assert!(judge(&outcome).is_success());

        let log = std::fs::read(&req.log_path).unwrap();
        assert_eq!(log.len() as u64, outcome.output_bytes);
        assert!(String::from_utf8_lossy(&log).contains(r"working \udcff"));
        let chunk = chunks.recv().await.unwrap();
        assert_eq!(chunk.step_id, req.step_id);

        let args = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
        assert_eq!(
            args.lines().collect::<Vec<_>>(),
            [
                "-p",
                "--dangerously-skip-permissions",
                "--model",
                "haiku",
                "--output-format",
                "stream-json",
                "--verbose",
                "do the task"
            ]
        );

        assert!(matches!(
            sig_rx.recv().await,
            Some(ExecSignal::Spawned {
                start_time: Some(_),
                ..
            })
        ));
        assert_eq!(
            sig_rx.recv().await,
            Some(ExecSignal::ApiRetry {
                attempt: Some(1),
                max_retries: Some(10),
                delay_ms: Some(600),
                error_status: Some(529),
                error: Some("overloaded_error".into()),
            })
        );
    }

    async fn run_fake(body: &str) -> ExecOutcome {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_claude(dir.path(), body);
        executor(bin)
            .execute(
                request(dir.path()),
                ExecContext::detached(CancellationToken::new()),
            )
            .await
            .unwrap()
    }

    /// The verdict of the executor itself, as the engine asks for it.
    fn judge(outcome: &ExecOutcome) -> Verdict {
        ClaudeExecutor::new("claude").judge(outcome)
    }

    fn kind(v: Verdict) -> Option<FailureKind> {
        match v {
            Verdict::Success => None,
            Verdict::Failure { kind, .. } => Some(kind),
        }
    }

    #[tokio::test]
    async fn api_errors_are_judged_by_the_result_line() {
        let overloaded = run_fake(
            r#"echo '{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 overloaded","api_error_status":529}'; exit 1"#,
        )
        .await;
        assert_eq!(overloaded.exit_code, 1);
        assert_eq!(
            kind(judge(&overloaded)),
            Some(FailureKind::Transient { status: Some(529) })
        );

        let refused = run_fake(
            r#"echo '{"type":"result","subtype":"success","is_error":true,"result":"Invalid API key","api_error_status":401}'"#,
        )
        .await;
        assert_eq!(refused.exit_code, 0);
        let verdict = judge(&refused);
        assert_eq!(kind(verdict.clone()), Some(FailureKind::AuthRefused));
        assert!(matches!(verdict, Verdict::Failure { message, .. } if message.contains("401")));
    }

    #[tokio::test]
    async fn exit_zero_without_result_is_no_result() {
        let outcome =
            run_fake(r#"echo '{"type":"system","subtype":"init"}'; echo 'partial text'"#).await;
        assert_eq!(outcome.exit_code, 0);
        assert!(outcome.result.is_none());
        assert!(outcome.output_text.ends_with("partial text\n"));
        assert_eq!(kind(judge(&outcome)), Some(FailureKind::NoResult));
    }

    #[tokio::test]
    async fn stderr_root_refusal_is_recognised() {
        let outcome = run_fake(
            "echo '--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons' >&2; exit 1",
        )
        .await;
        assert_eq!(outcome.exit_code, 1);
        assert!(outcome.stderr_tail.contains("root/sudo"));
        assert_eq!(kind(judge(&outcome)), Some(FailureKind::RootRefused));
    }

    #[tokio::test]
    async fn missing_binary_names_claude_bin() {
        let dir = tempfile::tempdir().unwrap();
        for bin in ["definitely-not-claude-xyz", "/nonexistent/claude"] {
            let err = executor(bin.into())
                .execute(
                    request(dir.path()),
                    ExecContext::detached(CancellationToken::new()),
                )
                .await
                .unwrap_err();
            match &err {
                ExecutorError::NotFound { program, key, hint } => {
                    assert_eq!(program, bin);
                    assert_eq!(key, "claude_bin");
                    assert!(hint.contains("@anthropic-ai/claude-code"));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains("claude_bin"));
        }
    }

    #[tokio::test]
    async fn root_without_sandbox_is_refused_before_spawning() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_claude(dir.path(), "echo ran > \"$(dirname \"$0\")/ran\"");
        let root = ClaudeExecutor {
            euid: Some(0),
            ..ClaudeExecutor::new(bin)
        };
        let mut req = request(dir.path());
        req.env = vec![("IS_SANDBOX".into(), "yes".into())];
        let err = root
            .execute(req.clone(), ExecContext::detached(CancellationToken::new()))
            .await
            .unwrap_err();
        let ExecutorError::Fatal { detail, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert!(detail.contains("IS_SANDBOX is `yes`"), "{detail}");
        assert!(detail.contains("export IS_SANDBOX=1"), "{detail}");
        assert!(!dir.path().join("ran").exists());

        // IS_SANDBOX=1 in the request overrides whatever loopd inherited.
        req.env = vec![
            ("IS_SANDBOX".into(), "yes".into()),
            ("IS_SANDBOX".into(), "1".into()),
        ];
        root.execute(req, ExecContext::detached(CancellationToken::new()))
            .await
            .unwrap();
        assert!(dir.path().join("ran").exists());
    }

    #[test]
    fn root_refusal_rules() {
        assert_eq!(root_refusal(Some(1000), None), None);
        assert_eq!(root_refusal(Some(1000), Some("yes")), None);
        assert_eq!(root_refusal(None, Some("yes")), None);
        assert_eq!(root_refusal(Some(0), Some("1")), None);
        let unset = root_refusal(Some(0), None).unwrap();
        assert!(unset.contains("IS_SANDBOX is not set"));
        let yes = root_refusal(Some(0), Some("yes")).unwrap();
        assert!(yes.contains("IS_SANDBOX is `yes`"));
        assert!(yes.contains("non-root user"));
        assert!(root_refusal(Some(0), Some("true")).is_some());
    }

    #[test]
    fn effective_env_prefers_the_last_override() {
        let env = vec![
            ("K_TEST_X".into(), "a".into()),
            ("K_TEST_X".into(), "b".into()),
        ];
        assert_eq!(effective_env(&env, "K_TEST_X").as_deref(), Some("b"));
        assert_eq!(effective_env(&[], "K_TEST_UNSET_XYZ"), None);
    }

    #[test]
    fn program_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake_claude(dir.path(), "");
        assert!(program_exists(&bin, None, dir.path()));
        assert!(program_exists("./claude", None, dir.path()));
        assert!(program_exists(
            "claude",
            dir.path().to_str(),
            Path::new("/")
        ));
        assert!(program_exists(
            "sh",
            Some("/nope:/usr/bin:/bin"),
            Path::new("/")
        ));
        assert!(!program_exists("sh", Some("/nope"), Path::new("/")));
        assert!(!program_exists("", Some("/bin"), Path::new("/")));
        std::fs::write(dir.path().join("plain"), "").unwrap();
        assert!(!program_exists(
            "plain",
            dir.path().to_str(),
            Path::new("/")
        ));
    }
}
