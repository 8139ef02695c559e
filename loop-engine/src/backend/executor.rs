//! The `Executor` trait: runs one agent invocation (an implementation, review or naming step),
//! reports what happened and judges it (success, or which kind of failure). The engine decides
//! what a verdict means for the run (retry, fail, done).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::{AgentUsage, RunId, StepId};
use crate::outcome::Verdict;

/// Why the agent is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecPurpose {
    /// Implement one task of the plan.
    Implementation,
    /// Review one implemented task.
    Review,
    /// Name the run (answer a short label).
    Naming,
    /// Analyse a finished run (SPEC §12 postmortem): read the run's files and answer a
    /// Markdown report. The agent must not change the worktree: an executor that can withhold
    /// write tools does so (the Claude CLI gets read-only tools).
    Postmortem,
}

/// One agent invocation.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecRequest {
    /// The run.
    pub run_id: RunId,
    /// The step this invocation belongs to.
    pub step_id: StepId,
    /// Why the agent is called.
    pub purpose: ExecPurpose,
    /// The iteration label (`3`, `3R1`, `3A2`), for logs.
    pub label: String,
    /// The prompt text.
    pub prompt: String,
    /// The model to ask for (`opus`, `haiku`, ...).
    pub model: String,
    /// The working directory (the run's worktree).
    pub workdir: PathBuf,
    /// Where the whole output is written as it arrives (created or truncated).
    pub log_path: PathBuf,
    /// Kill the agent after this long (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Kill the agent after this long without any output (`None`: no limit).
    pub idle_timeout: Option<Duration>,
    /// Extra environment variables on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// Resource limits of the agent's cgroup (`agent_memory_max`, `agent_pids_max`,
    /// `agent_cpu_max`); the default is none.
    pub limits: crate::process::AgentLimits,
}

/// Which stream a chunk of output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of live agent output, as it arrived.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputChunk {
    /// The step that printed it.
    pub step_id: StepId,
    /// Byte offset of `data` in the step's log file (stdout and stderr interleaved as written).
    pub offset: u64,
    /// The stream.
    pub stream: OutputStream,
    /// Raw bytes (not necessarily UTF-8, not necessarily whole lines).
    pub data: Bytes,
}

/// Facts an executor reports while the agent runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecSignal {
    /// The agent process started. Persisted so a restarted daemon can find survivors.
    Spawned {
        /// Process id (also the process group id).
        pid: u32,
        /// Process start time in clock ticks since boot (guards against pid reuse).
        start_time: Option<u64>,
    },
    /// The agent CLI retried an API call by itself.
    ApiRetry {
        /// Its attempt number.
        attempt: Option<u64>,
        /// Its retry limit.
        max_retries: Option<u64>,
        /// Its delay before the retry.
        delay_ms: Option<u64>,
        /// HTTP status of the failed call.
        error_status: Option<u16>,
        /// Error kind/text.
        error: Option<String>,
    },
}

/// Where an executor sends live output and signals, and how it learns it must stop.
#[derive(Clone, Debug)]
pub struct ExecContext {
    /// Live output for followers. Sending never blocks; slow receivers lag and are dropped.
    pub output: broadcast::Sender<OutputChunk>,
    /// Signals for the engine (unbounded: there are only a few per step).
    pub signals: mpsc::UnboundedSender<ExecSignal>,
    /// Cancelled when the run is canceled or the daemon shuts down: stop the agent promptly.
    pub cancel: CancellationToken,
}

impl ExecContext {
    /// A context whose output and signals go nowhere; for one-off calls and tests.
    pub fn detached(cancel: CancellationToken) -> Self {
        let (output, _) = broadcast::channel(16);
        let (signals, _) = mpsc::unbounded_channel();
        Self {
            output,
            signals,
            cancel,
        }
    }
}

/// How the agent process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// It exited by itself.
    Exited,
    /// It was killed by a signal it did not get from us.
    Signaled,
    /// It ran past `timeout` and was killed (exit code 124).
    TimedOut,
    /// It printed nothing for `idle_timeout` and was killed (exit code 124).
    IdleTimedOut,
    /// The cancel token fired and it was stopped.
    Canceled,
}

/// The agent's final stream-json `result` line.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentResult {
    /// `subtype` (`success`, `error_max_turns`, ...). Not a verdict by itself.
    pub subtype: Option<String>,
    /// `is_error`: the verdict of the CLI.
    pub is_error: bool,
    /// `result`: the final answer text.
    pub text: String,
    /// `api_error_status`, when the CLI gave up on an API error.
    pub api_error_status: Option<u16>,
    /// `api_error`: the CLI's typed kind of the API failure it gave up on, e.g.
    /// `usage_limit_reached` (the account's usage limit; see `usage_limit_resets_at`).
    #[serde(default)]
    pub api_error: Option<String>,
    /// When the account's usage limit resets, in Unix seconds: the `resetsAt` of the session's
    /// last rejected `rate_limit_event` (or of the `api_error_params.rate_limit_info` of its
    /// error message). The `result` line itself does not carry it.
    #[serde(default)]
    pub usage_limit_resets_at: Option<i64>,
    /// Turns, tokens, cost.
    pub usage: AgentUsage,
}

/// What an agent invocation produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecOutcome {
    /// Exit code: the process's own, 124 after a timeout, 128+N after signal N, 130 after a
    /// cancel.
    pub exit_code: i32,
    /// How it ended (`None` is never produced by the built-in executors; `Exited` is default).
    pub termination: Option<Termination>,
    /// The final `result` line, if a stream-json one came.
    pub result: Option<AgentResult>,
    /// The text used for completion detection: the result text when a `result` line came,
    /// else the end of plain-text stdout (at most 64 KiB).
    pub output_text: String,
    /// The end of stderr (at most 8 KiB), for error messages.
    pub stderr_tail: String,
    /// Bytes written to the log (stdout and stderr).
    pub output_bytes: u64,
    /// Lines written to the log.
    pub output_lines: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// What the agent's processes used, from its cgroup (`None` where agents are contained by
    /// process group, and for executors that run no process).
    pub resources: Option<crate::domain::AgentResources>,
}

/// Errors of an [`Executor`]: the agent could not be run at all. An agent that ran and failed
/// is an `Ok(ExecOutcome)` with a non-zero exit code or an error result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The agent program does not exist or is not executable.
    #[error("agent program `{program}` not found (config key `{key}`): {hint}")]
    NotFound {
        /// The program as configured.
        program: String,
        /// The config key that names it.
        key: String,
        /// What to do about it.
        hint: String,
    },
    /// A transient failure to start (too many processes, ...): the call may succeed later.
    #[error("agent could not be started")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A permanent failure (log file not writable, bad working directory, ...).
    #[error("agent could not be run: {detail}")]
    Fatal {
        /// What went wrong.
        detail: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Runs agent invocations.
///
/// # Contract
/// - **One invocation per call.** The executor does not retry: retries and their backoff are the
///   engine's decision, made from the returned [`ExecOutcome`].
/// - **Output** is written to `req.log_path` as it arrives and published on `ctx.output` with
///   its byte offset in that file (so a follower that lagged can fill the gap from the file);
///   it is never held whole in memory.
/// - **Timeouts**: past `req.timeout` or `req.idle_timeout` the agent and every process it
///   started are stopped and the outcome has exit code 124.
/// - **Cancellation**: when `ctx.cancel` fires the agent and its descendants are stopped and the
///   call returns promptly with [`Termination::Canceled`]. Dropping the future also stops the
///   agent (no process outlives its call).
/// - **Idempotency**: none; each call starts a new agent. The engine records the pid sent in
///   [`ExecSignal::Spawned`] so a crashed daemon's agents can be found and killed.
/// - **Errors**: `Err` only when the agent could not be started or its log not written.
/// - **Judgement**: [`Executor::judge`] says what an outcome of this executor means. The
///   engine asks the executor that ran the step, so an injected executor is judged exactly
///   like the same executor chosen by configuration.
///
/// [`run_agent`](crate::impls::run_agent) keeps the output, timeout and cancellation parts of
/// this contract for any agent that is a process: an executor built on it only chooses the
/// command line.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs the agent once.
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError>;

    /// What `outcome` (returned by [`Executor::execute`]) means. The default suits agents
    /// whose exit code is their verdict: exit 0 is success, and a stream-json `result` line
    /// decides when one came. Executors whose agent must end with a `result` line (the Claude
    /// CLI) override it with [`Verdict::of`]`(outcome, true)`.
    fn judge(&self, outcome: &ExecOutcome) -> Verdict {
        Verdict::of(outcome, false)
    }
}

#[cfg(any(test, feature = "testing"))]
mockall::mock! {
    /// A mockall mock of [`Executor`]: `execute` is driven by expectations, `judge` keeps the
    /// trait's default.
    pub Executor {}

    #[async_trait]
    impl Executor for Executor {
        async fn execute(
            &self,
            req: ExecRequest,
            ctx: ExecContext,
        ) -> Result<ExecOutcome, ExecutorError>;
    }
}
