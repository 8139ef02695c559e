//! `executor=codex`: the OpenAI Codex CLI, non-interactive with its JSONL event stream.
//!
//! `codex exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox
//! -c check_for_update_on_startup=false -c analytics.enabled=false [-m <codex_model>]
//! [<endpoint>] <codex_args> <prompt>` runs in the worktree with stdin closed. The Codex CLI
//! ignores `OPENAI_BASE_URL`, so when the agent's environment sets it, `<endpoint>` defines a
//! model provider with that base URL (Responses API, key from `OPENAI_API_KEY`) and selects it.
//!
//! Its stdout is one JSON event a line (`thread.started`, `turn.started`, `item.completed`,
//! `turn.completed`, `turn.failed`, `error`); [`CodexStream`] turns them into the outcome: the
//! last `agent_message` is the final text, `turn.completed` carries the token usage,
//! `turn.failed` is the error, and its `Reconnecting... 2/5 (...)` errors are the CLI's own
//! API retries. See `docs/agents.md` for the facts behind this.

use async_trait::async_trait;
use serde_json::Value;

use crate::backend::{
    AgentResult, ExecContext, ExecOutcome, ExecRequest, ExecSignal, Executor, ExecutorError,
    Verdict,
};
use crate::domain::AgentUsage;
use crate::impls::agent_cli::{CliInstall, split_args, status_in, uint};
use crate::impls::agent_process::{ProgramKey, StreamReader, run_reading};
use crate::impls::claude_executor::effective_env;
use crate::impls::stream_json::parse_value;
use crate::process::Cmd;

/// What a Codex auth failure tells the user to check.
pub(crate) const CODEX_CREDENTIALS: &str =
    "OPENAI_API_KEY (or log the Codex CLI in with `codex login`)";

pub(crate) const CODEX: CliInstall = CliInstall {
    name: "codex",
    folder_prefix: "codex-",
    pinned: include_str!("../../../.ci/codex-version"),
    key: ProgramKey {
        key: "codex_bin",
        hint: "install the Codex CLI (`npm install -g @openai/codex`, or bin/install-codex) or set codex_bin to its path",
    },
};

/// The model provider the executor defines when `OPENAI_BASE_URL` is set.
const PROVIDER_ID: &str = "agent_loop";

/// Runs the OpenAI Codex CLI.
#[derive(Clone, Debug)]
pub struct CodexExecutor {
    bin: String,
    model: Option<String>,
    extra: Vec<String>,
}

impl CodexExecutor {
    /// An executor running `bin` (`codex_bin`) with `model` (`codex_model`; `None`: the CLI's
    /// own default) and the extra arguments of `args` (`codex_args`, split like a shell
    /// would).
    ///
    /// # Errors
    /// `args` cannot be split into words (an unbalanced quote); the message names `codex_args`.
    pub fn new(
        bin: impl Into<String>,
        model: Option<String>,
        args: Option<&str>,
    ) -> Result<Self, String> {
        Ok(Self {
            bin: bin.into(),
            model: model.filter(|m| !m.trim().is_empty()),
            extra: split_args("codex_args", args)?,
        })
    }

    /// The arguments for `req`; `base_url` is the effective `OPENAI_BASE_URL`, if any.
    pub fn args(&self, req: &ExecRequest, base_url: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-c",
            "check_for_update_on_startup=false",
            "-c",
            "analytics.enabled=false",
        ]
        .map(String::from)
        .into();
        if let Some(model) = &self.model {
            args.extend(["-m".into(), model.clone()]);
        }
        if let Some(url) = base_url.filter(|u| !u.trim().is_empty()) {
            args.extend([
                "-c".into(),
                format!("model_provider={PROVIDER_ID}"),
                "-c".into(),
                format!(
                    "model_providers.{PROVIDER_ID}={{name=\"agent-loop\",base_url={},env_key=\"OPENAI_API_KEY\",wire_api=\"responses\"}}",
                    toml_string(url.trim())
                ),
            ]);
        }
        args.extend(self.extra.iter().cloned());
        args.push(req.prompt.clone());
        args
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[async_trait]
impl Executor for CodexExecutor {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let program = CODEX.resolve(&self.bin, &req.env, &req.workdir)?;
        let base_url = effective_env(&req.env, "OPENAI_BASE_URL");
        let cmd = Cmd::new(&program, &req.workdir).args(self.args(&req, base_url.as_deref()));
        let reader = CodexStream::new(self.model.clone());
        let run = run_reading(cmd, CODEX.key, &req, &ctx, Box::new(reader)).await?;
        tracing::debug!(
            step_id = %req.step_id,
            exit_code = run.outcome.exit_code,
            output_bytes = run.outcome.output_bytes,
            "codex finished"
        );
        Ok(run.outcome)
    }

    /// Codex must end its turn with `turn.completed` or `turn.failed`; exit code 0 without
    /// either means it was interrupted. Auth failures name `OPENAI_API_KEY`.
    fn judge(&self, outcome: &ExecOutcome) -> Verdict {
        Verdict::of_agent(outcome, true, CODEX_CREDENTIALS)
    }
}

/// Reads `codex exec --json` events.
#[derive(Debug, Default)]
pub(crate) struct CodexStream {
    model: Option<String>,
    /// The last `agent_message` text.
    text: Option<String>,
    /// Turns completed so far.
    turns: u64,
    result: Option<AgentResult>,
}

impl CodexStream {
    pub(crate) fn new(model: Option<String>) -> Self {
        Self {
            model,
            ..Self::default()
        }
    }

    fn event(&mut self, v: &Value, ctx: &ExecContext) {
        match v.get("type").and_then(Value::as_str) {
            Some("item.completed") => {
                let item = v.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("agent_message")
                    && let Some(text) = item.get("text").and_then(Value::as_str)
                {
                    self.text = Some(text.to_owned());
                }
            }
            Some("turn.completed") => {
                self.turns += 1;
                let usage = v.get("usage").unwrap_or(&Value::Null);
                let input = uint(usage, "input_tokens");
                let cached = uint(usage, "cached_input_tokens");
                self.result = Some(AgentResult {
                    subtype: Some("success".into()),
                    is_error: false,
                    text: self.text.clone().unwrap_or_default(),
                    api_error_status: None,
                    api_error: None,
                    usage_limit_resets_at: None,
                    usage: AgentUsage {
                        num_turns: Some(self.turns),
                        // OpenAI counts cached input inside input_tokens; the budgets count
                        // it apart, as Claude reports it.
                        input_tokens: input.map(|i| i.saturating_sub(cached.unwrap_or(0))),
                        output_tokens: uint(usage, "output_tokens"),
                        cache_read_input_tokens: cached,
                        cache_creation_input_tokens: None,
                        cost_usd: None,
                        is_error: false,
                        duration_api_ms: None,
                        model: self.model.clone(),
                    },
                });
            }
            Some("turn.failed") => {
                let message = error_message(v.get("error").unwrap_or(&Value::Null));
                self.result = Some(AgentResult {
                    subtype: Some("turn_failed".into()),
                    is_error: true,
                    api_error_status: error_status(&message),
                    api_error: None,
                    usage_limit_resets_at: None,
                    text: message,
                    usage: AgentUsage {
                        num_turns: Some(self.turns),
                        is_error: true,
                        model: self.model.clone(),
                        ..AgentUsage::default()
                    },
                });
            }
            Some("error") => {
                let message = error_message(v);
                if let Some(retry) = reconnect(&message) {
                    // The engine may have stopped listening; the line is in the log anyway.
                    let _ = ctx.signals.send(retry);
                }
            }
            _ => {}
        }
    }
}

impl StreamReader for CodexStream {
    fn line(&mut self, line: &[u8], ctx: &ExecContext) {
        if let Some(v) = parse_value(line.trim_ascii()) {
            self.event(&v, ctx);
        }
    }

    fn finish(&mut self) -> Option<AgentResult> {
        self.result.take()
    }
}

/// The text of an error object or event: its `message`, else the whole value.
fn error_message(v: &Value) -> String {
    match v.get("message") {
        Some(Value::String(s)) => s.clone(),
        _ => match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
    }
}

/// The status of a failed turn: the one its message names; a usage or rate limit without one
/// counts as 429 (it goes away with time).
fn error_status(message: &str) -> Option<u16> {
    status_in(message).or_else(|| {
        let lower = message.to_lowercase();
        ["usage limit", "rate limit", "quota"]
            .iter()
            .any(|p| lower.contains(p))
            .then_some(429)
    })
}

/// `Reconnecting... 2/5 (unexpected status 503 ...)`: the CLI retries an API call.
fn reconnect(message: &str) -> Option<ExecSignal> {
    let rest = message.strip_prefix("Reconnecting...")?.trim_start();
    let (counts, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let (attempt, max) = counts.split_once('/').unwrap_or((counts, ""));
    let reason = reason
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_owned();
    Some(ExecSignal::ApiRetry {
        attempt: attempt.parse().ok(),
        max_retries: max.parse().ok(),
        delay_ms: None,
        error_status: status_in(&reason),
        error: (!reason.is_empty()).then_some(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ExecPurpose, FailureKind, Termination};
    use crate::domain::{RunId, StepId};
    use std::path::Path;
    use tokio_util::sync::CancellationToken;

    fn request(dir: &Path) -> ExecRequest {
        ExecRequest {
            run_id: RunId::new(),
            step_id: StepId::new(),
            purpose: ExecPurpose::Implementation,
            label: "1".into(),
            prompt: "do the task".into(),
            model: "opus".into(),
            workdir: dir.to_owned(),
            log_path: dir.join("logs/iter-01.log"),
            timeout: Some(std::time::Duration::from_secs(30)),
            idle_timeout: None,
            env: vec![("OPENAI_BASE_URL".into(), "http://127.0.0.1:9/v1".into())],
            limits: crate::process::AgentLimits::default(),
        }
    }

    /// A fake `codex` that records its arguments and prints `body` (shell).
    fn fake(dir: &Path, body: &str) -> String {
        let path = dir.join("codex");
        std::fs::write(
            &path,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args.txt\"\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.to_string_lossy().into_owned()
    }

    async fn run(body: &str) -> (ExecOutcome, Vec<ExecSignal>, String) {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake(dir.path(), body);
        let exec = CodexExecutor::new(bin, Some("gpt-5".into()), Some("--foo 'a b'")).unwrap();
        let (output, _) = tokio::sync::broadcast::channel(64);
        let (signals, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = ExecContext {
            output,
            signals,
            cancel: CancellationToken::new(),
        };
        let outcome = exec.execute(request(dir.path()), ctx).await.unwrap();
        let mut sigs = Vec::new();
        while let Ok(s) = rx.try_recv() {
            if matches!(s, ExecSignal::ApiRetry { .. }) {
                sigs.push(s);
            }
        }
        let args = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
        (outcome, sigs, args)
    }

    fn kind(v: Verdict) -> Option<FailureKind> {
        match v {
            Verdict::Success => None,
            Verdict::Failure { kind, .. } => Some(kind),
        }
    }

    fn judge(outcome: &ExecOutcome) -> Verdict {
        CodexExecutor::new("codex", None, None)
            .unwrap()
            .judge(outcome)
    }

    const OK: &str = r#"cat <<'EOF'
{"type":"thread.started","thread_id":"t"}
{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata for `gpt-5` not found."}}
{"type":"turn.started"}
{"type":"error","message":"Reconnecting... 1/5 (unexpected status 503 Service Unavailable: busy, url: http://x/v1/responses)"}
{"type":"item.completed","item":{"id":"item_1","type":"command_execution","command":"bash -lc ls","aggregated_output":"a\n","exit_code":0,"status":"completed"}}
{"type":"item.completed","item":{"id":"item_2","type":"agent_message","text":"Completed task 1. 2 tasks remain."}}
{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":400,"output_tokens":50}}
EOF"#;

    #[tokio::test]
    async fn a_completed_turn_is_the_result() {
        let (outcome, sigs, args) = run(OK).await;
        assert_eq!(outcome.termination, Some(Termination::Exited));
        let result = outcome.result.clone().unwrap();
        assert!(!result.is_error);
        assert_eq!(result.text, "Completed task 1. 2 tasks remain.");
        assert_eq!(outcome.output_text, result.text);
        assert_eq!(result.usage.input_tokens, Some(600));
        assert_eq!(result.usage.cache_read_input_tokens, Some(400));
        assert_eq!(result.usage.output_tokens, Some(50));
        assert_eq!(result.usage.model.as_deref(), Some("gpt-5"));
        assert!(judge(&outcome).is_success());
        assert_eq!(
            sigs,
            [ExecSignal::ApiRetry {
                attempt: Some(1),
                max_retries: Some(5),
                delay_ms: None,
                error_status: Some(503),
                error: Some(
                    "unexpected status 503 Service Unavailable: busy, url: http://x/v1/responses"
                        .into()
                ),
            }]
        );
        let args: Vec<&str> = args.lines().collect();
        assert_eq!(
            args[..8],
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--dangerously-bypass-approvals-and-sandbox",
                "-c",
                "check_for_update_on_startup=false",
                "-c",
                "analytics.enabled=false"
            ]
        );
        assert_eq!(args[8..10], ["-m", "gpt-5"]);
        assert_eq!(args[10..12], ["-c", "model_provider=agent_loop"]);
        assert_eq!(
            args[13],
            r#"model_providers.agent_loop={name="agent-loop",base_url="http://127.0.0.1:9/v1",env_key="OPENAI_API_KEY",wire_api="responses"}"#
        );
        assert_eq!(args[14..], ["--foo", "a b", "do the task"]);
    }

    #[tokio::test]
    async fn a_refused_key_fails_naming_openai_api_key() {
        let (outcome, _, _) = run(
            r#"echo '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: bad key, url: http://x/v1/responses"}}'; exit 1"#,
        )
        .await;
        let verdict = judge(&outcome);
        assert!(
            matches!(&verdict, Verdict::Failure { kind: FailureKind::AuthRefused, message } if message.contains("OPENAI_API_KEY")),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn server_errors_and_limits_are_transient() {
        let (outcome, _, _) = run(
            r#"echo '{"type":"turn.failed","error":{"message":"unexpected status 503 Service Unavailable: busy"}}'; exit 1"#,
        )
        .await;
        assert_eq!(
            kind(judge(&outcome)),
            Some(FailureKind::Transient { status: Some(503) })
        );
        let (outcome, _, _) = run(
            r#"echo '{"type":"turn.failed","error":{"message":"You have hit your usage limit. Try again later."}}'; exit 1"#,
        )
        .await;
        assert_eq!(
            kind(judge(&outcome)),
            Some(FailureKind::Transient { status: Some(429) })
        );
    }

    #[tokio::test]
    async fn exit_zero_without_a_finished_turn_is_no_result() {
        let (outcome, _, _) = run(r#"echo '{"type":"turn.started"}'"#).await;
        assert_eq!(kind(judge(&outcome)), Some(FailureKind::NoResult));
    }

    #[test]
    fn bad_args_name_the_key() {
        let err = CodexExecutor::new("codex", None, Some("\"open")).unwrap_err();
        assert!(err.contains("codex_args"), "{err}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
