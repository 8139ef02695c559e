//! custom-executor: a template `Executor` for an agent CLI that loop-engine does not know.
//!
//! Copy this crate, change [`ScriptAgent::command`] to build your CLI's command line, and pass
//! the executor to `Engine::builder().executor(...)`. The process half of the `Executor`
//! contract comes from [`run_agent`]: the output is written to `req.log_path` and published on
//! `ctx.output` as it arrives, `req.timeout` and `req.idle_timeout` stop the agent (exit code
//! 124), `ctx.cancel` stops it promptly (exit code 130), and every process it started is
//! stopped with it. What is left to you is the command line and, if your CLI's exit code is not
//! its verdict, [`Executor::judge`].
//!
//! For most CLIs the built-in `executor=command` config (a template such as
//! `aider --message {prompt}`) is enough; write your own executor when you need more control
//! (a prompt file in a format of your own, extra setup per call, your own judgement).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use loop_engine::backend::{
    ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, Verdict,
};
use loop_engine::impls::{ProgramKey, run_agent};
use loop_engine::process::Cmd;

/// What a missing program is blamed on in the error the engine reports.
const PROGRAM: ProgramKey = ProgramKey {
    key: "ScriptAgent program",
    hint: "pass the path of an executable to ScriptAgent::new",
};

/// Runs `<program> <prompt file>` in the worktree, with the model in `AGENT_MODEL`.
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

    /// The command line for one request: change this for your CLI. Only the command: the
    /// working directory is the worktree, `req.env` is added by [`run_agent`], and timeouts
    /// and cancellation are handled there too.
    pub fn command(&self, req: &ExecRequest, prompt_file: &Path) -> Cmd {
        Cmd::new(&self.program, &req.workdir)
            .arg(prompt_file)
            .env("AGENT_MODEL", &req.model)
    }
}

#[async_trait]
impl Executor for ScriptAgent {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        // The prompt goes to a file beside the log (`iter-03.log` -> `iter-03.prompt.txt`).
        let prompt_file = req.log_path.with_extension("prompt.txt");
        if let Some(dir) = prompt_file.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| fatal(format!("cannot create {}", dir.display()), e))?;
        }
        tokio::fs::write(&prompt_file, &req.prompt)
            .await
            .map_err(|e| fatal(format!("cannot write {}", prompt_file.display()), e))?;
        run_agent(self.command(&req, &prompt_file), PROGRAM, &req, &ctx).await
    }

    /// Exit code 0 is success (a stream-json `result` line decides when your CLI prints one).
    /// Change this if your CLI says more: e.g. `Verdict::of(outcome, true)` for a CLI that
    /// must end with a `result` line, as the Claude executor does.
    fn judge(&self, outcome: &ExecOutcome) -> Verdict {
        Verdict::of(outcome, false)
    }
}

fn fatal(detail: String, e: std::io::Error) -> ExecutorError {
    ExecutorError::Fatal {
        detail,
        source: Some(Box::new(e)),
    }
}
