//! Worktree setup (issue 13): `setup_cmds` run once in a new worktree before the first agent
//! call (install dependencies, copy an `.env`), each with `setup_timeout_sec`, logged under
//! `<run folder>/setup/`. A failing command ends the run `setup_failed` with the command and
//! the end of its output; no agent is called.

use std::time::Instant;

use crate::artifacts;
use crate::domain::{ArtifactKind, ExitReason, ReportKind, StepPhase, StepStatus};
use crate::engine::driver::state::{RunDriver, ms};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::report::Row;

/// Lines of a failing setup command's output quoted in the run's failure.
const FAILURE_TAIL_LINES: usize = 20;

impl RunDriver {
    /// Runs `setup_cmds` in the worktree unless a setup already succeeded in it (a resumed
    /// run whose worktree was kept).
    pub(super) async fn setup(&mut self, new_worktree: bool) -> Result<(), Stop> {
        if self.cfg.setup_cmds.is_empty() || (self.setup_done && !new_worktree) {
            return Ok(());
        }
        let dir = self.rec.folder.root().join("setup");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Stop::failed(format!("cannot create {}: {e}", dir.display())))?;
        let mut step = self.new_step(0, "setup", StepPhase::Setup, 1);
        self.start_step(&step).await?;
        let started = Instant::now();
        for (n, cmd) in self.cfg.setup_cmds.clone().iter().enumerate() {
            self.checkpoint()?;
            let log = dir.join(format!("setup-{}.log", n + 1));
            self.report(
                Some(step.id),
                ReportKind::SetupCmdStart,
                Row {
                    output_path: Some(log.clone()),
                    ..Row::msg("setup", format!("cmd={cmd}"))
                },
            )
            .await?;
            self.flush().await?;
            let t = Instant::now();
            let workdir = self.worktree.lend();
            let run = self.project_cmd(workdir.path(), cmd, self.cfg.setup_timeout_sec);
            let out = tokio::select! {
                out = run.output() => out,
                () = self.control.cancel.cancelled() => {
                    step.reason = Some("canceled".into());
                    self.end_step(&mut step, StepStatus::Canceled, ms(started)).await?;
                    return Err(self.interrupted());
                }
            };
            drop(workdir);
            let (code, timed_out, bytes) = match out {
                Ok(o) => {
                    let mut all = o.stdout;
                    all.extend_from_slice(&o.stderr);
                    if let Err(e) = artifacts::write_private(&log, &all) {
                        tracing::warn!(run_id = %self.run.id, error = %e, "cannot write a setup log");
                    }
                    (o.code, o.timed_out, all.len() as u64)
                }
                Err(e) => {
                    let text = format!("cannot run setup command `{cmd}`: {}", chain(&e));
                    let _ = artifacts::write_private(&log, text.as_bytes());
                    (127, false, text.len() as u64)
                }
            };
            self.rec.record(ArtifactKind::SetupLog, &log).await;
            self.report(
                Some(step.id),
                ReportKind::SetupCmdEnd,
                Row {
                    duration_ms: Some(ms(t)),
                    exit_code: Some(code),
                    output_bytes: Some(bytes),
                    output_path: Some(log.clone()),
                    ..Row::msg(
                        "setup",
                        format!(
                            "cmd={cmd} status={}",
                            if code == 0 { "ok" } else { "failed" }
                        ),
                    )
                },
            )
            .await?;
            if code != 0 {
                let why = if timed_out {
                    format!(
                        "timed out after setup_timeout_sec={} s (exit {code})",
                        self.cfg.setup_timeout_sec
                    )
                } else {
                    format!("exited with {code}")
                };
                let tail = artifacts::tail_lines(&log, FAILURE_TAIL_LINES).unwrap_or_default();
                step.exit_code = Some(code);
                step.reason = Some(format!("`{cmd}` {why}"));
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                return Err(Stop::Fail {
                    reason: ExitReason::SetupFailed,
                    detail: format!(
                        "run {}: setup command `{cmd}` {why} in {} (log {}); no agent ran. Last lines:\n{}",
                        self.run.id,
                        self.worktree.path().display(),
                        log.display(),
                        tail.trim_end()
                    ),
                });
            }
        }
        step.exit_code = Some(0);
        self.end_step(&mut step, StepStatus::Succeeded, ms(started))
            .await?;
        self.setup_done = true;
        Ok(())
    }
}
