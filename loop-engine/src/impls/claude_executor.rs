//! The default [`Executor`]: the Claude Code CLI in print mode with stream-json output.
//!
//! `claude -p --dangerously-skip-permissions --model <model> --output-format stream-json
//! --verbose <prompt>` runs in the worktree, in its own process group, with stdin closed and
//! the daemon's environment plus `ExecRequest.env`. What the run means is judged from the final
//! `result` line (see [`Verdict::of`]), never from the exit code alone.

use std::ffi::OsStr;
use std::path::Path;

use async_trait::async_trait;

use crate::backend::{ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, Verdict};
use crate::impls::agent_process::{ProgramKey, run_measured};
use crate::outcome::ROOT_REFUSAL_FIX;
use crate::process::{self, Cmd};

const CLAUDE_KEY: ProgramKey = ProgramKey {
    key: "claude_bin",
    hint: "install the Claude Code CLI (`npm install -g @anthropic-ai/claude-code`) or set claude_bin to its path",
};

/// Runs the Claude Code CLI.
#[derive(Clone, Debug)]
pub struct ClaudeExecutor {
    claude_bin: String,
    /// The effective uid to assume (tests); `None` reads the real one at each call.
    euid: Option<u32>,
}

impl ClaudeExecutor {
    /// An executor running `claude_bin` (a program on `PATH`, or a path).
    pub fn new(claude_bin: impl Into<String>) -> Self {
        Self {
            claude_bin: claude_bin.into(),
            euid: None,
        }
    }

    /// The arguments for `req`: print mode, no permission prompts, the model, stream-json.
    pub fn args(req: &ExecRequest) -> Vec<String> {
        vec![
            "-p".into(),
            "--dangerously-skip-permissions".into(),
            "--model".into(),
            req.model.clone(),
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
            req.prompt.clone(),
        ]
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
        if !program_exists(&self.claude_bin, path_var.as_deref(), &req.workdir) {
            return Err(ExecutorError::NotFound {
                program: self.claude_bin.clone(),
                key: CLAUDE_KEY.key.into(),
                hint: CLAUDE_KEY.hint.into(),
            });
        }
        let euid = self.euid.or_else(process::effective_uid);
        let sandbox = effective_env(&req.env, "IS_SANDBOX");
        if let Some(detail) = root_refusal(euid, sandbox.as_deref()) {
            return Err(ExecutorError::Fatal {
                detail,
                source: None,
            });
        }
        let cmd = Cmd::new(&self.claude_bin, &req.workdir).args(Self::args(&req));
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
fn effective_env(env: &[(String, String)], key: &str) -> Option<String> {
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
fn program_exists(program: &str, path_var: Option<&str>, workdir: &Path) -> bool {
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
        }
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
