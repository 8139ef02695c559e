//! `executor=gemini`: the Gemini CLI, headless with its stream-JSON output.
//!
//! `gemini -p <prompt> -o stream-json --yolo --skip-trust [-m <gemini_model>] <gemini_args>`
//! runs in the worktree with stdin closed. The CLI reads its endpoint from
//! `GOOGLE_GEMINI_BASE_URL`, its key from `GEMINI_API_KEY`, and needs an auth method selected
//! in its settings (`security.auth.selectedType`, under `$GEMINI_CLI_HOME/.gemini/`).
//!
//! Its stdout is one JSON object a line (`init`, `message`, `tool_use`, `tool_result`,
//! `error`, `result`); [`GeminiStream`] turns them into the outcome: the assistant text after
//! the last tool call is the final text, the `result` line's `status` the verdict and its
//! `stats` the token usage. See `docs/agents.md` for the facts behind this.

use async_trait::async_trait;
use serde_json::Value;

use crate::backend::{
    AgentResult, ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, FailureKind,
    Verdict,
};
use crate::domain::AgentUsage;
use crate::impls::agent_cli::{CliInstall, split_args, status_in, uint};
use crate::impls::agent_process::{ProgramKey, StreamReader, run_reading};
use crate::impls::stream_json::parse_value;
use crate::process::Cmd;

/// What a Gemini auth failure tells the user to check.
pub(crate) const GEMINI_CREDENTIALS: &str = "GEMINI_API_KEY (and that the Gemini CLI's settings select it: security.auth.selectedType = \"gemini-api-key\")";

pub(crate) const GEMINI: CliInstall = CliInstall {
    name: "gemini",
    folder_prefix: "gemini-cli-",
    pinned: include_str!("../../../.ci/gemini-version"),
    key: ProgramKey {
        key: "gemini_bin",
        hint: "install the Gemini CLI (`npm install -g @google/gemini-cli`, or bin/install-gemini) or set gemini_bin to its path",
    },
};

/// Runs the Gemini CLI.
#[derive(Clone, Debug)]
pub struct GeminiExecutor {
    bin: String,
    model: Option<String>,
    extra: Vec<String>,
}

impl GeminiExecutor {
    /// An executor running `bin` (`gemini_bin`) with `model` (`gemini_model`; `None`: the
    /// CLI's own default) and the extra arguments of `args` (`gemini_args`).
    ///
    /// # Errors
    /// `args` cannot be split into words; the message names `gemini_args`.
    pub fn new(
        bin: impl Into<String>,
        model: Option<String>,
        args: Option<&str>,
    ) -> Result<Self, String> {
        Ok(Self {
            bin: bin.into(),
            model: model.filter(|m| !m.trim().is_empty()),
            extra: split_args("gemini_args", args)?,
        })
    }

    /// The arguments for `req`.
    pub fn args(&self, req: &ExecRequest) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-p".into(),
            req.prompt.clone(),
            "-o".into(),
            "stream-json".into(),
            "--yolo".into(),
            "--skip-trust".into(),
        ];
        if let Some(model) = &self.model {
            args.extend(["-m".into(), model.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

#[async_trait]
impl Executor for GeminiExecutor {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let program = GEMINI.resolve(&self.bin, &req.env, &req.workdir)?;
        let cmd = Cmd::new(&program, &req.workdir).args(self.args(&req));
        let run = run_reading(cmd, GEMINI.key, &req, &ctx, Box::<GeminiStream>::default()).await?;
        tracing::debug!(
            step_id = %req.step_id,
            exit_code = run.outcome.exit_code,
            output_bytes = run.outcome.output_bytes,
            "gemini finished"
        );
        Ok(run.outcome)
    }

    /// Gemini must end with its `result` line; exit code 0 without one means it was
    /// interrupted. Before the first API call it refuses to run without an auth method
    /// (exit 41, "Invalid auth method selected") or a key: both are auth failures naming
    /// `GEMINI_API_KEY`.
    fn judge(&self, outcome: &ExecOutcome) -> Verdict {
        if outcome.result.is_none()
            && outcome.exit_code != 0
            && let Some(why) = auth_setup_problem(&outcome.stderr_tail)
        {
            return Verdict::Failure {
                kind: FailureKind::AuthRefused,
                message: format!(
                    "the Gemini CLI has no usable credentials ({why}): set {GEMINI_CREDENTIALS}"
                ),
            };
        }
        Verdict::of_agent(outcome, true, GEMINI_CREDENTIALS)
    }
}

/// The start-up refusal of a Gemini CLI without credentials, as its stderr says it.
fn auth_setup_problem(stderr: &str) -> Option<&'static str> {
    let lower = stderr.to_lowercase();
    if lower.contains("invalid auth method selected") {
        return Some("no auth method selected");
    }
    if lower.contains("please set an auth method") {
        return Some("no auth method set");
    }
    if lower.contains("gemini_api_key") && lower.contains("environment variable") {
        return Some("GEMINI_API_KEY is not set");
    }
    None
}

/// Reads `gemini -o stream-json` lines.
#[derive(Debug, Default)]
pub(crate) struct GeminiStream {
    model: Option<String>,
    /// Assistant text since the last tool call.
    text: String,
    result: Option<AgentResult>,
}

impl GeminiStream {
    fn event(&mut self, v: &Value) {
        match v.get("type").and_then(Value::as_str) {
            Some("init") => {
                self.model = v
                    .get("model")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned);
            }
            Some("message") if v.get("role").and_then(Value::as_str) == Some("assistant") => {
                let content = v.get("content").and_then(Value::as_str).unwrap_or_default();
                if v.get("delta").and_then(Value::as_bool) == Some(true) {
                    self.text.push_str(content);
                } else {
                    content.clone_into(&mut self.text);
                }
            }
            Some("tool_use" | "tool_result") => self.text.clear(),
            Some("result") => self.result = Some(self.result_of(v)),
            _ => {}
        }
    }

    fn result_of(&self, v: &Value) -> AgentResult {
        let status = v.get("status").and_then(Value::as_str).unwrap_or("error");
        let is_error = status != "success";
        let error = v.get("error").unwrap_or(&Value::Null);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if error.is_null() {
                    String::new()
                } else {
                    error.to_string()
                }
            });
        let stats = v.get("stats").unwrap_or(&Value::Null);
        let cached = uint(stats, "cached");
        // `input` is the prompt tokens not served from the cache; older versions only give
        // `input_tokens` (all of them).
        let input = uint(stats, "input")
            .or_else(|| uint(stats, "input_tokens").map(|i| i.saturating_sub(cached.unwrap_or(0))));
        let model = stats
            .get("models")
            .and_then(Value::as_object)
            .and_then(|m| m.keys().next().cloned())
            .or_else(|| self.model.clone());
        let text = if is_error {
            message.clone()
        } else {
            self.text.trim_end().to_owned()
        };
        AgentResult {
            subtype: Some(status.to_owned()),
            is_error,
            api_error_status: is_error.then(|| api_status(&message)).flatten(),
            api_error: None,
            usage_limit_resets_at: None,
            text,
            usage: AgentUsage {
                num_turns: None,
                input_tokens: input,
                output_tokens: uint(stats, "output_tokens"),
                cache_read_input_tokens: cached,
                cache_creation_input_tokens: None,
                cost_usd: None,
                is_error,
                duration_api_ms: None,
                model,
            },
        }
    }
}

/// The status of a Gemini API error message. A key Google does not know is refused with 400
/// `API key not valid` (`API_KEY_INVALID`): that is an auth failure too; quota exhaustion
/// without a status counts as 429.
fn api_status(message: &str) -> Option<u16> {
    let lower = message.to_lowercase();
    if lower.contains("api key not valid") || lower.contains("api_key_invalid") {
        return Some(401);
    }
    status_in(message).or_else(|| {
        ["resource_exhausted", "quota", "rate limit"]
            .iter()
            .any(|p| lower.contains(p))
            .then_some(429)
    })
}

impl StreamReader for GeminiStream {
    fn line(&mut self, line: &[u8], _ctx: &ExecContext) {
        if let Some(v) = parse_value(line.trim_ascii()) {
            self.event(&v);
        }
    }

    fn finish(&mut self) -> Option<AgentResult> {
        self.result.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ExecPurpose, Termination};
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
            env: Vec::new(),
            limits: crate::process::AgentLimits::default(),
        }
    }

    async fn run(body: &str) -> (ExecOutcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gemini");
        std::fs::write(
            &path,
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args.txt\"\n{body}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let exec = GeminiExecutor::new(
            path.to_string_lossy(),
            Some("gemini-2.5-pro".into()),
            Some("--debug"),
        )
        .unwrap();
        let outcome = exec
            .execute(
                request(dir.path()),
                ExecContext::detached(CancellationToken::new()),
            )
            .await
            .unwrap();
        let args = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
        (outcome, args)
    }

    fn judge(outcome: &ExecOutcome) -> Verdict {
        GeminiExecutor::new("gemini", None, None)
            .unwrap()
            .judge(outcome)
    }

    const OK: &str = r#"cat <<'EOF'
{"type":"init","timestamp":"t","session_id":"s","model":"gemini-2.5-pro"}
{"type":"message","role":"user","content":"do the task"}
{"type":"message","role":"assistant","content":"Let me look.","delta":true}
{"type":"tool_use","tool_name":"run_shell_command","tool_id":"c1","parameters":{"command":"ls"}}
{"type":"tool_result","tool_id":"c1","status":"success","output":"a"}
{"type":"message","role":"assistant","content":"Completed task 1. ","delta":true}
{"type":"message","role":"assistant","content":"2 tasks remain.","delta":true}
{"type":"result","status":"success","stats":{"total_tokens":1300,"input_tokens":1200,"output_tokens":100,"cached":200,"input":1000,"duration_ms":5,"tool_calls":1,"models":{"gemini-2.5-pro":{"total_tokens":1300}}}}
EOF"#;

    #[tokio::test]
    async fn the_text_after_the_last_tool_call_is_the_answer() {
        let (outcome, args) = run(OK).await;
        assert_eq!(outcome.termination, Some(Termination::Exited));
        let result = outcome.result.clone().unwrap();
        assert!(!result.is_error);
        assert_eq!(result.text, "Completed task 1. 2 tasks remain.");
        assert_eq!(outcome.output_text, result.text);
        assert_eq!(result.usage.input_tokens, Some(1000));
        assert_eq!(result.usage.cache_read_input_tokens, Some(200));
        assert_eq!(result.usage.output_tokens, Some(100));
        assert_eq!(result.usage.model.as_deref(), Some("gemini-2.5-pro"));
        assert!(judge(&outcome).is_success());
        assert_eq!(
            args.lines().collect::<Vec<_>>(),
            [
                "-p",
                "do the task",
                "-o",
                "stream-json",
                "--yolo",
                "--skip-trust",
                "-m",
                "gemini-2.5-pro",
                "--debug"
            ]
        );
    }

    #[tokio::test]
    async fn api_errors_are_judged() {
        let refused = r#"echo '{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: {\"error\":{\"message\":\"bad key\",\"code\":401}}]"},"stats":{}}'; exit 145"#;
        let (outcome, _) = run(refused).await;
        let verdict = judge(&outcome);
        assert!(
            matches!(&verdict, Verdict::Failure { kind: FailureKind::AuthRefused, message } if message.contains("GEMINI_API_KEY")),
            "{verdict:?}"
        );
        let invalid = r#"echo '{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: API key not valid. Please pass a valid API key.]"},"stats":{}}'; exit 145"#;
        let (outcome, _) = run(invalid).await;
        assert!(matches!(
            judge(&outcome),
            Verdict::Failure {
                kind: FailureKind::AuthRefused,
                ..
            }
        ));
        let busy = r#"echo '{"type":"result","status":"error","error":{"type":"unknown","message":"[API Error: {\"error\":{\"message\":\"busy\",\"code\":503}}]"},"stats":{}}'; exit 145"#;
        let (outcome, _) = run(busy).await;
        assert!(matches!(
            judge(&outcome),
            Verdict::Failure {
                kind: FailureKind::Transient { status: Some(503) },
                ..
            }
        ));
    }

    #[tokio::test]
    async fn no_auth_method_is_an_auth_failure() {
        let (outcome, _) = run("echo 'Invalid auth method selected.' >&2; exit 41").await;
        let verdict = judge(&outcome);
        assert!(
            matches!(&verdict, Verdict::Failure { kind: FailureKind::AuthRefused, message } if message.contains("selectedType")),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn exit_zero_without_a_result_is_no_result() {
        let (outcome, _) = run(r#"echo '{"type":"init","model":"m"}'"#).await;
        assert!(matches!(
            judge(&outcome),
            Verdict::Failure {
                kind: FailureKind::NoResult,
                ..
            }
        ));
    }
}
