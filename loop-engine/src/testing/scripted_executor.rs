//! `ScriptedExecutor`: an `Executor` driven by a script of expected calls with canned
//! behaviour. It records what it received, fails a call it did not expect, and panics on drop
//! if script entries were left unused, so a driver test reads like a transcript.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{
    AgentResult, ExecContext, ExecOutcome, ExecPurpose, ExecRequest, Executor, ExecutorError,
    Termination,
};
use crate::impls::SimulatedAgent;
use crate::impls::sim_agent::{canceled_outcome, finish_outcome, wait_or_cancel};

/// A custom action: gets the request, returns the outcome.
pub type CustomAction = Arc<dyn Fn(&ExecRequest) -> ExecOutcome + Send + Sync>;

/// What one scripted call does.
#[derive(Clone)]
pub enum Act {
    /// Work the plan like a real agent ([`SimulatedAgent`]).
    Agent,
    /// Answer this text, change nothing, exit 0.
    Reply(String),
    /// Exit with this code and print this to stderr.
    Fail {
        /// Exit code.
        code: i32,
        /// Error text.
        stderr: String,
    },
    /// Behave like the Claude CLI ending with a stream-json `result` line.
    Result {
        /// `is_error`.
        is_error: bool,
        /// `api_error_status`.
        status: Option<u16>,
        /// `result` text.
        text: String,
    },
    /// Hang until the request's timeout (then exit 124, timed out) or a cancel.
    Hang,
    /// Run a shell command in the worktree (through `sh -c`), then act like `Agent`.
    ShellThenAgent(String),
    /// Anything else.
    Custom(CustomAction),
}

impl std::fmt::Debug for Act {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Agent => f.write_str("Agent"),
            Self::Reply(t) => write!(f, "Reply({t:?})"),
            Self::Fail { code, .. } => write!(f, "Fail({code})"),
            Self::Result {
                is_error, status, ..
            } => write!(f, "Result({is_error}, {status:?})"),
            Self::Hang => f.write_str("Hang"),
            Self::ShellThenAgent(c) => write!(f, "ShellThenAgent({c:?})"),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<(ExecPurpose, Act)>,
    received: Vec<ExecRequest>,
    unexpected: Vec<String>,
}

/// An executor that follows a script (see the module docs).
#[derive(Clone)]
pub struct ScriptedExecutor {
    state: Arc<Mutex<State>>,
    agent: SimulatedAgent,
    /// When the script runs out, keep acting like an agent instead of failing.
    then_agent: bool,
    delay: Duration,
    git_env: Vec<(String, String)>,
}

impl ScriptedExecutor {
    /// An executor expecting exactly these calls, in order.
    pub fn new(script: impl IntoIterator<Item = (ExecPurpose, Act)>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                script: script.into_iter().collect(),
                ..State::default()
            })),
            agent: SimulatedAgent::new(),
            then_agent: false,
            delay: Duration::ZERO,
            git_env: Vec::new(),
        }
    }

    /// After the script, behave like a real agent for any further call.
    pub fn then_agent(mut self) -> Self {
        self.then_agent = true;
        self
    }

    /// Every call takes at least `delay`.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Environment for git commands made while acting like an agent.
    pub fn with_git_env(mut self, env: Vec<(String, String)>) -> Self {
        self.agent = self.agent.clone().with_git_env(env.clone());
        self.git_env = env;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<ExecRequest> {
        self.lock().received.clone()
    }

    /// Script entries not used yet.
    pub fn remaining(&self) -> usize {
        self.lock().script.len()
    }

    /// Calls that did not match the script.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    fn next_act(&self, req: &ExecRequest) -> Option<Act> {
        let mut s = self.lock();
        s.received.push(req.clone());
        match s.script.pop_front() {
            Some((purpose, act)) if purpose == req.purpose => Some(act),
            Some((purpose, act)) => {
                let msg = format!(
                    "call {} ({}): expected a {purpose:?} call, got {:?}",
                    s.received.len(),
                    req.label,
                    req.purpose
                );
                s.script.push_front((purpose, act));
                s.unexpected.push(msg);
                None
            }
            None if self.then_agent => Some(Act::Agent),
            None => {
                let msg = format!(
                    "call {} ({}, {:?}): the script has no more entries",
                    s.received.len(),
                    req.label,
                    req.purpose
                );
                s.unexpected.push(msg);
                None
            }
        }
    }
}

impl Drop for ScriptedExecutor {
    fn drop(&mut self) {
        // Only the last clone checks, and never while already panicking.
        if Arc::strong_count(&self.state) != 1 || std::thread::panicking() {
            return;
        }
        let s = self.lock();
        assert!(
            s.unexpected.is_empty(),
            "ScriptedExecutor got unexpected calls: {:#?}",
            s.unexpected
        );
        assert!(
            s.script.is_empty(),
            "ScriptedExecutor: {} script entries were never used: {:?}",
            s.script.len(),
            s.script
        );
    }
}

#[async_trait]
impl Executor for ScriptedExecutor {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let started = Instant::now();
        let Some(act) = self.next_act(&req) else {
            return Err(ExecutorError::Fatal {
                detail: format!("scripted executor: unexpected call {}", req.label),
                source: None,
            });
        };
        if !wait_or_cancel(self.delay, &ctx).await {
            return Ok(canceled_outcome(started));
        }
        match act {
            Act::Agent => match self.agent.act(&req).await {
                Ok(r) => finish_outcome(&req, &ctx, &r.text, 0, started).await,
                Err(e) => finish_outcome(&req, &ctx, &e, 1, started).await,
            },
            Act::ShellThenAgent(script) => {
                let mut cmd = crate::process::Cmd::new("sh", &req.workdir).args(["-c", &script]);
                for (k, v) in &self.git_env {
                    cmd = cmd.env(k, v);
                }
                let out = cmd.output().await.map_err(|e| ExecutorError::Fatal {
                    detail: "scripted shell failed to start".into(),
                    source: Some(Box::new(e)),
                })?;
                if !out.success() {
                    return finish_outcome(&req, &ctx, &out.stderr_text(), out.code, started).await;
                }
                match self.agent.act(&req).await {
                    Ok(r) => finish_outcome(&req, &ctx, &r.text, 0, started).await,
                    Err(e) => finish_outcome(&req, &ctx, &e, 1, started).await,
                }
            }
            Act::Reply(text) => finish_outcome(&req, &ctx, &text, 0, started).await,
            Act::Fail { code, stderr } => finish_outcome(&req, &ctx, &stderr, code, started).await,
            Act::Result {
                is_error,
                status,
                text,
            } => {
                let mut out = finish_outcome(&req, &ctx, &text, 0, started).await?;
                out.result = Some(AgentResult {
                    subtype: Some("success".into()),
                    is_error,
                    text,
                    api_error_status: status,
                    usage: crate::domain::AgentUsage {
                        num_turns: Some(1),
                        is_error,
                        ..Default::default()
                    },
                    ..AgentResult::default()
                });
                Ok(out)
            }
            Act::Hang => {
                let limit = req.timeout.unwrap_or(Duration::from_secs(3600));
                if wait_or_cancel(limit, &ctx).await {
                    let mut out = finish_outcome(&req, &ctx, "timed out", 124, started).await?;
                    out.termination = Some(Termination::TimedOut);
                    Ok(out)
                } else {
                    Ok(canceled_outcome(started))
                }
            }
            Act::Custom(f) => Ok(f(&req)),
        }
    }
}
