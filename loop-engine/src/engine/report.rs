//! The run's paper trail: every report-kind event goes to the store, to followers, to
//! `report.tsv` and to `run.log` at once; artifact files are checksummed, mirrored to the
//! global folder and recorded in the store.

use std::path::{Path, PathBuf};

use crate::artifacts::{self, ReportRow, RunFolder};
use crate::config::{ArtifactMode, Config};
use crate::domain::{
    ArtifactKind, ArtifactLocation, EventKind, NewArtifact, NewEvent, RunId, StepId, now_ms,
};
use crate::engine::core::Inner;

/// One row of report.tsv, before the task counts are filled in.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Row {
    pub(crate) iteration: String,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) output_bytes: Option<u64>,
    pub(crate) output_lines: Option<u64>,
    pub(crate) output_path: Option<PathBuf>,
    pub(crate) message: String,
}

impl Row {
    pub(crate) fn msg(iteration: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            iteration: iteration.into(),
            message: message.into(),
            ..Self::default()
        }
    }
}

/// Writes a run's artifacts and records them.
pub(crate) struct Recorder {
    pub(crate) run_id: RunId,
    pub(crate) folder: RunFolder,
    pub(crate) mirror: Option<RunFolder>,
}

impl Recorder {
    pub(crate) fn new(
        run_id: RunId,
        workspace: &Path,
        cfg: &Config,
        global: Option<&Path>,
    ) -> Self {
        let folder = RunFolder::workspace(workspace, &cfg.log_dir, run_id);
        let mirror = match cfg.artifact_mode {
            ArtifactMode::Mirror => {
                let dir = global
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| cfg.global_log_dir_expanded());
                Some(RunFolder::global(&dir, run_id))
            }
            ArtifactMode::Workspace => None,
        };
        Self {
            run_id,
            folder,
            mirror,
        }
    }

    pub(crate) fn create_dirs(&self) -> std::io::Result<()> {
        self.folder.create()?;
        if let Some(m) = &self.mirror {
            m.create()?;
        }
        Ok(())
    }

    /// Appends a report-kind event: store + followers, then report.tsv and run.log.
    pub(crate) async fn report(
        &self,
        inner: &Inner,
        step_id: Option<StepId>,
        kind: EventKind,
        row: Row,
        tasks: (u32, u32),
    ) -> Result<(), crate::backend::StoreError> {
        let ts = now_ms();
        let payload = serde_json::json!({
            "iteration": row.iteration,
            "duration_ms": row.duration_ms,
            "exit_code": row.exit_code,
            "output_bytes": row.output_bytes,
            "output_lines": row.output_lines,
            "output_path": row.output_path,
            "message": row.message,
            "tasks_done": tasks.0,
            "tasks_total": tasks.1,
        });
        let mut event = NewEvent::new(self.run_id, kind, payload);
        event.ts = ts;
        event.step_id = step_id;
        inner.emit(event).await?;
        let report_row = ReportRow {
            timestamp_ms: ts,
            kind,
            iteration: row.iteration.clone(),
            duration_ms: row.duration_ms,
            exit_code: row.exit_code,
            output_bytes: row.output_bytes,
            output_lines: row.output_lines,
            output_path: row.output_path.clone(),
            message: row.message.clone(),
            tasks_done: Some(tasks.0),
            tasks_total: Some(tasks.1),
        };
        let report_path = self.folder.report();
        let log_path = self.folder.run_log();
        let line = format!(
            "{} iter={} {}",
            kind.as_str(),
            if row.iteration.is_empty() {
                "-"
            } else {
                &row.iteration
            },
            row.message
        );
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            artifacts::ReportWriter::open(&report_path)?.append(&report_row)?;
            artifacts::RunLog::append(&log_path, &line)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(run_id = %self.run_id, error = %e, "cannot write report.tsv/run.log")
            }
            Err(e) => tracing::warn!(run_id = %self.run_id, error = %e, "report writer panicked"),
        }
        Ok(())
    }

    /// Appends a line to run.log only.
    pub(crate) async fn log(&self, line: String) {
        let path = self.folder.run_log();
        let res =
            tokio::task::spawn_blocking(move || artifacts::RunLog::append(&path, &line)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!(run_id = %self.run_id, error = %e, "cannot write run.log");
        }
    }

    /// Checksums `path`, mirrors it, and records both copies in the store. IO problems are
    /// logged, not fatal: the store and the workspace copy remain the truth.
    pub(crate) async fn record(
        &self,
        inner: &Inner,
        kind: ArtifactKind,
        path: &Path,
    ) -> Result<(), crate::backend::StoreError> {
        let src = path.to_path_buf();
        let folder = self.folder.clone();
        let mirror = self.mirror.clone();
        let described = tokio::task::spawn_blocking(move || {
            let local = artifacts::describe(kind, ArtifactLocation::Workspace, &src)?;
            let global = match &mirror {
                Some(m) => {
                    let copy = artifacts::mirror_file(&folder, m, &src)?;
                    Some(artifacts::describe(kind, ArtifactLocation::Global, &copy)?)
                }
                None => None,
            };
            Ok::<_, std::io::Error>((local, global))
        })
        .await;
        let (local, global) = match described {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::warn!(run_id = %self.run_id, path = %path.display(), error = %e, "cannot record artifact");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %e, "artifact recorder panicked");
                return Ok(());
            }
        };
        for file in std::iter::once(local).chain(global) {
            inner
                .store
                .record_artifact(&NewArtifact {
                    run_id: self.run_id,
                    kind: file.kind,
                    location: file.location,
                    path: file.path,
                    checksum: file.checksum,
                })
                .await?;
        }
        Ok(())
    }
}
