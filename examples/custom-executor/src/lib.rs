//! custom-executor: a template `Executor` for an agent CLI that loop-engine does not know.
//!
//! Copy this file, change `ScriptAgent::command` to build your CLI's command line, and pass
//! the executor to `Engine::builder().executor(...)`. The contract to keep (see the
//! `Executor` trait docs): write the whole output to `req.log_path`, honour the timeout and
//! `ctx.cancel`, and return the answer text in `ExecOutcome::output_text` so completion
//! detection works. For most CLIs the built-in `executor=command` config (a template such as
//! `aider --message {prompt}`) is enough; write your own when you need more control.

use std::path::PathBuf;
use std::time::Instant;

use async_trait::async_trait;
use loop_engine::backend::{
    ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, Termination,
};
use loop_engine::process::{Cmd, ProcessError};

/// Runs `<program> <prompt file>` in the worktree and takes its last stdout line as the answer.
#[derive(Clone, Debug)]
pub struct ScriptAgent {
    program: PathBuf,
}

impl ScriptAgent {
    /// An executor for `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The command line for one request: change this for your CLI.
    fn command(&self, req: &ExecRequest, prompt_file: &std::path::Path) -> Cmd {
        Cmd::new(&self.program, &req.workdir)
            .arg(prompt_file)
            .env("AGENT_MODEL", &req.model)
            .timeout(req.timeout)
    }
}

fn fatal(detail: String, e: impl std::error::Error + Send + Sync + 'static) -> ExecutorError {
    ExecutorError::Fatal {
        detail,
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl Executor for ScriptAgent {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        let started = Instant::now();
        let prompt_file = req.log_path.with_extension("prompt.txt");
        tokio::fs::write(&prompt_file, &req.prompt)
            .await
            .map_err(|e| fatal(format!("cannot write {}", prompt_file.display()), e))?;
        let run = self.command(&req, &prompt_file).output();
        // Dropping the future kills the child (the door sets kill_on_drop), so a cancel only
        // has to stop waiting.
        let out = tokio::select! {
            out = run => out,
            () = ctx.cancel.cancelled() => {
                return Ok(ExecOutcome {
                    exit_code: 130,
                    termination: Some(Termination::Canceled),
                    ..ExecOutcome::default()
                });
            }
        };
        let out = match out {
            Ok(o) => o,
            Err(ProcessError::NotFound { program, .. }) => {
                return Err(ExecutorError::NotFound {
                    program,
                    key: "agent program".into(),
                    hint: "pass the path of an executable".into(),
                });
            }
            Err(e) => return Err(fatal("agent could not be started".into(), e)),
        };
        let mut log = out.stdout.clone();
        log.extend_from_slice(&out.stderr);
        tokio::fs::write(&req.log_path, &log)
            .await
            .map_err(|e| fatal(format!("cannot write {}", req.log_path.display()), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let answer = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Ok(ExecOutcome {
            exit_code: out.code,
            termination: Some(if out.timed_out {
                Termination::TimedOut
            } else {
                Termination::Exited
            }),
            result: None,
            output_text: answer.to_owned(),
            stderr_tail: String::from_utf8_lossy(&out.stderr).into_owned(),
            output_bytes: log.len() as u64,
            output_lines: log.iter().filter(|b| **b == b'\n').count() as u64,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }
}
