//! The run's paper trail: every report-kind event goes to the store, to followers, to
//! `report.tsv` and to `run.log`; artifact files are checksummed, mirrored to the global folder
//! and recorded in the store. Writes are journaled and land together at each flush.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::artifacts::{self, ReportRow, RunFolder};
use crate::backend::StoreWrite;
use crate::config::{ArtifactMode, Config};
use crate::domain::{
    ArtifactKind, ArtifactLocation, EventKind, EventPayload, NewArtifact, NewEvent, ReportKind,
    ReportLine, RunId, StepId, UnixMs, now_ms,
};
use crate::engine::inner::Inner;

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
///
/// Store writes (steps, events, artifacts, the run row) and report.tsv/run.log lines are
/// queued in a journal and land together at [`Recorder::flush`]: one store transaction and one
/// pass over the files instead of a round trip per write. The driver flushes before anything
/// that takes time or must be durable first (starting an agent or a command, sleeping,
/// merging, ending the run), so nothing stays queued while the run waits.
pub(crate) struct Recorder {
    pub(crate) run_id: RunId,
    pub(crate) folder: RunFolder,
    pub(crate) mirror: Option<RunFolder>,
    journal: Mutex<Journal>,
    deferred: Mutex<Vec<DeferredRecord>>,
    /// The lease epoch of this worker's claim of the run: every batch then starts with a
    /// [`StoreWrite::Fence`], so nothing lands once another worker took the run over.
    fence: Option<u64>,
}

/// Artifact files to write and checksum at the next flush (see [`Recorder::defer_record`]).
struct DeferredRecord {
    paths: Vec<(ArtifactKind, PathBuf)>,
    before: Box<dyn FnOnce() + Send>,
}

/// Writes queued since the last flush.
#[derive(Default)]
struct Journal {
    writes: Vec<StoreWrite>,
    lines: Vec<Line>,
}

/// A line for the run's text files.
enum Line {
    /// A report.tsv row and its run.log line.
    Report(ReportRow, String),
    /// A run.log line only.
    Log(UnixMs, String),
}

/// Above this many queued writes the journal is flushed without waiting for the next
/// boundary, so a long phase without one cannot grow it without bound.
const FLUSH_AT: usize = 64;

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
            journal: Mutex::default(),
            deferred: Mutex::default(),
            fence: None,
        }
    }

    /// The same recorder with every batch fenced by `epoch` (see [`StoreWrite::Fence`]).
    pub(crate) fn fenced(mut self, epoch: u64) -> Self {
        self.fence = Some(epoch);
        self
    }

    /// The epoch this recorder fences its batches with, if any.
    pub(crate) fn fence(&self) -> Option<u64> {
        self.fence
    }

    pub(crate) fn create_dirs(&self) -> std::io::Result<()> {
        self.folder.create()?;
        if let Some(m) = &self.mirror {
            m.create()?;
        }
        Ok(())
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        // Every update is a push or a take: a panicked holder leaves it consistent.
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a store write. A later full-row update of the same run or step replaces an
    /// earlier queued one: only the last state needs to land.
    pub(crate) fn write(&self, write: StoreWrite) {
        let mut j = self.journal();
        match &write {
            StoreWrite::UpdateRun(run) => j
                .writes
                .retain(|w| !matches!(w, StoreWrite::UpdateRun(r) if r.id == run.id)),
            StoreWrite::UpdateStep(step) => j
                .writes
                .retain(|w| !matches!(w, StoreWrite::UpdateStep(s) if s.id == step.id)),
            _ => {}
        }
        j.writes.push(write);
    }

    /// Queues an event.
    pub(crate) fn event(&self, event: NewEvent) {
        self.write(StoreWrite::AppendEvent(event));
    }

    /// True when something is queued.
    pub(crate) fn has_pending(&self) -> bool {
        let j = self.journal();
        !j.writes.is_empty()
            || !j.lines.is_empty()
            || !self
                .deferred
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty()
    }

    /// True when the journal has grown past [`FLUSH_AT`] writes.
    pub(crate) fn is_full(&self) -> bool {
        self.journal().writes.len() >= FLUSH_AT
    }

    /// Queues a report-kind event with its report.tsv row and run.log line.
    pub(crate) fn report(
        &self,
        step_id: Option<StepId>,
        kind: ReportKind,
        row: Row,
        tasks: (u32, u32),
    ) {
        let ts = now_ms();
        let payload = EventPayload::report(
            kind,
            ReportLine {
                iteration: row.iteration.clone(),
                duration_ms: row.duration_ms,
                exit_code: row.exit_code,
                output_bytes: row.output_bytes,
                output_lines: row.output_lines,
                output_path: row.output_path.clone(),
                message: row.message.clone(),
                tasks_done: tasks.0,
                tasks_total: tasks.1,
            },
        );
        let kind = EventKind::from(kind);
        let mut event = NewEvent::typed(self.run_id, &payload);
        event.ts = ts;
        event.step_id = step_id;
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
        let report_row = ReportRow {
            timestamp_ms: ts,
            kind,
            iteration: row.iteration,
            duration_ms: row.duration_ms,
            exit_code: row.exit_code,
            output_bytes: row.output_bytes,
            output_lines: row.output_lines,
            output_path: row.output_path,
            message: row.message,
            tasks_done: Some(tasks.0),
            tasks_total: Some(tasks.1),
        };
        let mut j = self.journal();
        j.writes.push(StoreWrite::AppendEvent(event));
        j.lines.push(Line::Report(report_row, line));
    }

    /// Queues a line for run.log only.
    pub(crate) fn log(&self, line: String) {
        self.journal().lines.push(Line::Log(now_ms(), line));
    }

    /// Lands everything queued: the report.tsv and run.log lines (a few small appends,
    /// written in place: cheaper than waking a blocking-pool thread while an agent starts on
    /// the other core), then the store writes in one batch, whose events then go to
    /// followers. The lines are written even when the store fails: the files are the trail
    /// that survives a store outage.
    pub(crate) async fn flush(&self, inner: &Inner) -> Result<(), crate::backend::StoreError> {
        let deferred = std::mem::take(
            &mut *self
                .deferred
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for job in deferred {
            self.record_with(job.paths, job.before).await;
        }
        let Journal { writes, lines } = std::mem::take(&mut *self.journal());
        if !lines.is_empty()
            && let Err(e) = write_lines(&self.folder.report(), &self.folder.run_log(), lines)
        {
            tracing::warn!(run_id = %self.run_id, error = %e, "cannot write report.tsv/run.log");
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut writes = writes;
        if let Some(epoch) = self.fence {
            writes.insert(
                0,
                StoreWrite::Fence {
                    run_id: self.run_id,
                    epoch,
                },
            );
        }
        let outcome = inner.store.write_batch(&writes).await?;
        for event in &outcome.events {
            inner.published(event);
        }
        Ok(())
    }

    /// Checksums `paths`, mirrors them, and queues their records (both copies). `before`
    /// runs first on the same blocking thread (e.g. to write one of the files). IO problems
    /// are logged, not fatal: the store and the workspace copy remain the truth. Returns which
    /// of `paths` were recorded.
    pub(crate) async fn record_with<F>(
        &self,
        paths: Vec<(ArtifactKind, PathBuf)>,
        before: F,
    ) -> Vec<bool>
    where
        F: FnOnce() + Send + 'static,
    {
        let folder = self.folder.clone();
        let mirror = self.mirror.clone();
        // Files no bigger than this are checksummed in place: a hop to the blocking pool
        // costs more than hashing them, and this runs between two agent calls. (A file that
        // `before` derives from another, like a log's tail, is never bigger than its source.)
        const IN_PLACE_BYTES: u64 = 1024 * 1024;
        let small = paths
            .iter()
            .all(|(_, p)| std::fs::metadata(p).map_or(true, |m| m.len() <= IN_PLACE_BYTES));
        let work = move || {
            before();
            paths
                .into_iter()
                .map(|(kind, src)| describe_with_mirror(&folder, mirror.as_ref(), kind, &src))
                .collect::<Vec<_>>()
        };
        let described = if small {
            Ok(work())
        } else {
            tokio::task::spawn_blocking(work).await
        };
        let described = match described {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %e, "artifact recorder panicked");
                return Vec::new();
            }
        };
        let mut recorded = Vec::with_capacity(described.len());
        for result in described {
            match result {
                Ok(files) => {
                    for file in files {
                        self.write(StoreWrite::RecordArtifact(NewArtifact {
                            run_id: self.run_id,
                            kind: file.kind,
                            location: file.location,
                            path: file.path,
                            checksum: file.checksum,
                        }));
                    }
                    recorded.push(true);
                }
                Err((path, e)) => {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(run_id = %self.run_id, path = %path.display(), error = %e, "cannot record artifact");
                    }
                    recorded.push(false);
                }
            }
        }
        recorded
    }

    /// [`Recorder::record_with`] at the next flush instead of now: an agent step's tail and
    /// checksums are made while the next agent starts, off the path between the two calls.
    pub(crate) fn defer_record<F>(&self, paths: Vec<(ArtifactKind, PathBuf)>, before: F)
    where
        F: FnOnce() + Send + 'static,
    {
        self.deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(DeferredRecord {
                paths,
                before: Box::new(before),
            });
    }

    /// [`Recorder::record_with`] for one file.
    pub(crate) async fn record(&self, kind: ArtifactKind, path: &Path) -> bool {
        self.record_with(vec![(kind, path.to_path_buf())], || {})
            .await
            .first()
            .copied()
            .unwrap_or(false)
    }
}

/// The workspace copy of an artifact and, in mirror mode, its global copy.
fn describe_with_mirror(
    folder: &RunFolder,
    mirror: Option<&RunFolder>,
    kind: ArtifactKind,
    src: &Path,
) -> Result<Vec<artifacts::ArtifactFile>, (PathBuf, std::io::Error)> {
    let fail = |e| (src.to_path_buf(), e);
    let mut files =
        vec![artifacts::describe(kind, ArtifactLocation::Workspace, src).map_err(fail)?];
    if let Some(m) = mirror {
        let copy = artifacts::mirror_file(folder, m, src).map_err(fail)?;
        files.push(artifacts::describe(kind, ArtifactLocation::Global, &copy).map_err(fail)?);
    }
    Ok(files)
}

/// Appends queued lines: report.tsv opened once, run.log line by line (one write each).
fn write_lines(report_path: &Path, log_path: &Path, lines: Vec<Line>) -> std::io::Result<()> {
    let mut report = None;
    for line in lines {
        match line {
            Line::Report(row, text) => {
                if report.is_none() {
                    report = Some(artifacts::ReportWriter::open(report_path)?);
                }
                if let Some(r) = report.as_mut() {
                    r.append(&row)?;
                }
                artifacts::RunLog::append_at(log_path, row.timestamp_ms, &text)?;
            }
            Line::Log(at, text) => artifacts::RunLog::append_at(log_path, at, &text)?,
        }
    }
    Ok(())
}
