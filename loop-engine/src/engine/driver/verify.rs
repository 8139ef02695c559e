//! Verification: the configured commands at one HEAD, skipped when HEAD is unchanged, the
//! failure notes for the next agent. How many failures in a row end a run is the loop's rule
//! (`machine/run.rs`).

use std::time::Instant;

use crate::artifacts;
use crate::domain::{ArtifactKind, ReportKind, StepPhase, StepStatus};
use crate::engine::driver::state::{RunDriver, ms};
use crate::engine::driver::stop::{Stop, chain};
use crate::engine::metrics::Metrics;
use crate::engine::report::Row;
use crate::machine::VerifyKind;
use crate::naming;
use crate::prompt;

impl RunDriver {
    /// Runs verification `kind` of iteration `i`. Returns whether it passed and whether it
    /// was skipped (HEAD unchanged since the last verification and the tree clean: the
    /// earlier verdict is returned).
    pub(super) async fn verify(&mut self, i: u32, kind: VerifyKind) -> Result<(bool, bool), Stop> {
        if self.cfg.verify_cmds.is_empty() {
            return Ok((true, false));
        }
        let head = self.head().await?;
        let clean = self.inner.vcs.is_clean(self.worktree.path()).await?;
        let label = match kind {
            VerifyKind::Gate => i.to_string(),
            VerifyKind::Review => format!("{i}-review"),
            VerifyKind::Final => format!("{i}-final"),
        };
        if clean
            && let Some((h, passed)) = &self.last_verified
            && *h == head
        {
            let passed = *passed;
            self.rec.log(format!(
                "verification {label} skipped: HEAD unchanged since the last verification ({})",
                if passed { "passed" } else { "failed" }
            ));
            self.report(
                None,
                ReportKind::VerifySkip,
                Row::msg(label, "reason=no_changes"),
            )
            .await?;
            return Ok((passed, true));
        }
        // A second verification of the same kind in one iteration (a failed final one before
        // the implementation step and another after it) gets its own label and logs.
        let mut slug = verify_slug(i, kind);
        let mut label = label;
        if self.verify_labels.contains(&label) {
            let n = (2u32..)
                .find(|n| !self.verify_labels.contains(&format!("{label}-{n}")))
                .unwrap_or(u32::MAX);
            label = format!("{label}-{n}");
            slug = format!("{slug}-{n}");
        }
        let mut step = self.new_step(i, &label, StepPhase::Verification, 1);
        step.head_before = head.clone();
        self.start_step(&step).await?;
        let started = Instant::now();
        self.report(
            Some(step.id),
            ReportKind::VerifyStart,
            Row::msg(
                label.clone(),
                format!("cmds={}", self.cfg.verify_cmds.len()),
            ),
        )
        .await?;
        let mut failure = None;
        for (n, cmd) in self.cfg.verify_cmds.clone().iter().enumerate() {
            self.checkpoint()?;
            let n = u32::try_from(n + 1).unwrap_or(u32::MAX);
            let log = self.rec.folder.verify_log(&slug, n);
            self.report(
                Some(step.id),
                ReportKind::VerifyCmdStart,
                Row {
                    output_path: Some(log.clone()),
                    ..Row::msg(label.clone(), format!("cmd={cmd}"))
                },
            )
            .await?;
            self.flush().await?;
            let t = Instant::now();
            // The command may commit: HEAD is read afresh once it is done.
            let workdir = self.worktree.lend();
            let run = self.project_cmd(workdir.path(), cmd, self.cfg.verify_timeout_sec);
            let out = tokio::select! {
                out = run.output() => out,
                () = self.control.cancel.cancelled() => {
                    step.reason = Some("canceled".into());
                    self.end_step(&mut step, StepStatus::Canceled, ms(started)).await?;
                    return Err(self.interrupted());
                }
            };
            drop(workdir);
            let (code, all) = match out {
                Ok(o) => {
                    let mut all = o.stdout;
                    all.extend_from_slice(&o.stderr);
                    (o.code, all)
                }
                Err(e) => {
                    let text = format!("cannot run verification command `{cmd}`: {}", chain(&e));
                    (127, text.into_bytes())
                }
            };
            if let Err(e) = artifacts::write_private(&log, &all) {
                tracing::warn!(run_id = %self.run.id, error = %e, "cannot write verification log");
            }
            let (bytes, lines) = (all.len() as u64, artifacts::count_lines(&all));
            self.rec.record(ArtifactKind::VerifyLog, &log).await;
            self.report(
                Some(step.id),
                ReportKind::VerifyCmdEnd,
                Row {
                    duration_ms: Some(ms(t)),
                    exit_code: Some(code),
                    output_bytes: Some(bytes),
                    output_lines: Some(lines),
                    output_path: Some(log.clone()),
                    ..Row::msg(label.clone(), format!("cmd={cmd}"))
                },
            )
            .await?;
            if code != 0 {
                failure = Some((cmd.clone(), code, log));
                break;
            }
        }
        let passed = failure.is_none();
        step.exit_code = Some(failure.as_ref().map_or(0, |f| f.1));
        self.report(
            Some(step.id),
            ReportKind::VerifyEnd,
            Row {
                exit_code: step.exit_code,
                output_path: failure.as_ref().map(|f| f.2.clone()),
                ..Row::msg(
                    label.clone(),
                    if passed { "status=ok" } else { "status=failed" },
                )
            },
        )
        .await?;
        self.last_verified = Some((head, passed));
        let notes = self.rec.folder.runner_notes();
        match failure {
            None => {
                Metrics::inc(&self.inner.metrics.verification_pass);
                self.end_step(&mut step, StepStatus::Succeeded, ms(started))
                    .await?;
                if notes.exists() {
                    let _ = artifacts::write_atomic(&notes, b"");
                }
                Ok((true, false))
            }
            Some((cmd, code, log)) => {
                Metrics::inc(&self.inner.metrics.verification_fail);
                let tail = artifacts::tail_lines(&log, 120).unwrap_or_default();
                let failure_text = format!(
                    "command: {cmd}\nexit code: {code}\nlog: {}\n\nlast 120 lines:\n{tail}\n",
                    log.display()
                );
                let failure_path = self.rec.folder.verify_failure(&slug);
                let _ = artifacts::write_atomic(&failure_path, failure_text.as_bytes());
                self.rec
                    .record(ArtifactKind::VerifyFailure, &failure_path)
                    .await;
                let text = prompt::runner_notes_for_failure(&cmd, code, &log, &tail);
                if let Err(e) = artifacts::write_atomic(&notes, text.as_bytes()) {
                    tracing::warn!(run_id = %self.run.id, error = %e, "cannot write runner notes");
                }
                self.rec.record(ArtifactKind::RunnerNotes, &notes).await;
                step.reason = Some(format!("`{cmd}` exited with {code}"));
                self.end_step(&mut step, StepStatus::Failed, ms(started))
                    .await?;
                self.last_verify_failure =
                    Some(format!("`{cmd}` exited with {code}, log {}", log.display()));
                Ok((false, false))
            }
        }
    }
}

fn verify_slug(i: u32, kind: VerifyKind) -> String {
    let base = naming::iteration_slug(&i.to_string());
    match kind {
        VerifyKind::Gate => base,
        VerifyKind::Review => format!("{base}-review"),
        VerifyKind::Final => format!("{base}-final"),
    }
}
