//! What [`Engine`] offers for postmortems: run one now (`loopctl analyze`,
//! `POST /runs/{id}/postmortem`), in the foreground or the background, and list a run's
//! `analysis/` folder (`GET /runs/{id}/postmortem`).

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::analyse::{
    AnalysisFile, PostmortemOptions, PostmortemReport, PostmortemStatus, Running, analyse,
    list_files,
};
use crate::config::Config;
use crate::domain::{Run, RunId};
use crate::engine::core::Engine;
use crate::engine::inner::Inner;
use crate::engine::report::Recorder;
use crate::error::EngineError;

/// How many lines of `summary.md` [`PostmortemListing::summary_head`] holds.
const SUMMARY_HEAD_LINES: usize = 6;
/// How much of `summary.md` is read for them.
const SUMMARY_HEAD_BYTES: u64 = 8 * 1024;
/// How much of the end of report.tsv is searched for the last `POSTMORTEM_END` row (it is
/// among the last rows: nothing but another postmortem writes after a run's end).
const REPORT_TAIL_BYTES: u64 = 64 * 1024;

/// A run's `analysis/` folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostmortemListing {
    /// The run.
    pub run_id: RunId,
    /// `<run folder>/analysis/` (it may not exist yet).
    pub dir: PathBuf,
    /// True while a postmortem of the run is under way in this engine.
    pub running: bool,
    /// Its files, by name (empty when there was no postmortem).
    pub files: Vec<AnalysisFile>,
    /// The first non-blank lines of `summary.md`, when it exists.
    pub summary_head: Option<String>,
    /// How the last postmortem of the run ended (its `POSTMORTEM_END` row), if one did.
    pub last_status: Option<PostmortemStatus>,
    /// That row's message (`status=ok files=10 cost_usd=...` or `status=failed ... reason=...`).
    pub last_message: Option<String>,
}

/// A postmortem ready to run: the run, its config and the recorder of its folder.
struct Prepared {
    run: Run,
    cfg: Config,
    rec: Recorder,
    running: Running,
}

impl Engine {
    /// Runs the postmortem of run `id` now and returns what it did. Refused (`InvalidState`)
    /// while the run is not terminal or another postmortem of it is under way; a failure of
    /// the postmortem itself is in the report (`status: failed`), not an error.
    pub async fn postmortem(
        &self,
        id: RunId,
        opts: PostmortemOptions,
    ) -> Result<PostmortemReport, EngineError> {
        let p = prepare(&self.inner, id, &opts).await?;
        let cancel = self.inner.shutdown.child_token();
        let report = analyse(&self.inner, &p.rec, &p.run, &p.cfg, &opts, cancel).await;
        drop(p.running);
        Ok(report)
    }

    /// [`Engine::postmortem`] in the background: checks the same things, then returns the
    /// `analysis/` folder at once; [`Engine::postmortem_listing`] says when it is done.
    pub async fn start_postmortem(
        &self,
        id: RunId,
        opts: PostmortemOptions,
    ) -> Result<PathBuf, EngineError> {
        let p = prepare(&self.inner, id, &opts).await?;
        let dir = p.rec.folder.root().join("analysis");
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let cancel = inner.shutdown.child_token();
            analyse(&inner, &p.rec, &p.run, &p.cfg, &opts, cancel).await;
            drop(p.running);
        });
        Ok(dir)
    }

    /// The files of run `id`'s `analysis/` folder, whether a postmortem is under way, and the
    /// head of its summary.
    pub async fn postmortem_listing(&self, id: RunId) -> Result<PostmortemListing, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        let cfg = run_config(&run)?;
        let rec = recorder(&self.inner, &run, &cfg);
        let dir = rec.folder.root().join("analysis");
        let running = self.inner.postmortems().contains(&id);
        let report = rec.folder.report();
        let (files, summary_head, last) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                (list_files(&dir), summary_head(&dir), last_end(&report))
            })
            .await
            .unwrap_or_default()
        };
        let last_status = last.as_deref().map(|m| {
            if m.starts_with("status=ok") {
                PostmortemStatus::Ok
            } else {
                PostmortemStatus::Failed
            }
        });
        Ok(PostmortemListing {
            run_id: id,
            dir,
            running,
            files,
            summary_head,
            last_status,
            last_message: last,
        })
    }
}

async fn prepare(
    inner: &Arc<Inner>,
    id: RunId,
    opts: &PostmortemOptions,
) -> Result<Prepared, EngineError> {
    if inner.shutdown.is_cancelled() {
        return Err(EngineError::ShuttingDown);
    }
    if opts.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(EngineError::InvalidInput {
            field: "model".into(),
            detail: "the model of a postmortem must not be empty".into(),
        });
    }
    let run = inner.store.get_run(id).await?;
    if !run.status.is_terminal() {
        return Err(EngineError::InvalidState {
            run_id: id,
            detail: format!(
                "the run is {}: a postmortem analyses a run that has ended",
                run.status
            ),
        });
    }
    let cfg = run_config(&run)?;
    let running = Running::claim(inner, id).ok_or_else(|| EngineError::InvalidState {
        run_id: id,
        detail: "a postmortem of this run is already under way".into(),
    })?;
    let rec = recorder(inner, &run, &cfg);
    if let Err(e) = rec.create_dirs() {
        return Err(EngineError::InvalidState {
            run_id: id,
            detail: format!(
                "cannot create the run folder {}: {e}",
                rec.folder.root().display()
            ),
        });
    }
    Ok(Prepared {
        run,
        cfg,
        rec,
        running,
    })
}

fn run_config(run: &Run) -> Result<Config, EngineError> {
    Config::from_json(&run.config).map_err(|e| EngineError::InvalidState {
        run_id: run.id,
        detail: format!(
            "its stored configuration cannot be read: {}",
            crate::error::chain(&e)
        ),
    })
}

fn recorder(inner: &Inner, run: &Run, cfg: &Config) -> Recorder {
    Recorder::new(
        run.id,
        &run.workspace_root,
        cfg,
        inner.settings.global_log_dir.as_deref(),
    )
}

/// The first non-blank lines of `<dir>/summary.md` (read up to a few KiB).
fn summary_head(dir: &std::path::Path) -> Option<String> {
    let file = std::fs::File::open(dir.join("summary.md")).ok()?;
    let mut text = String::new();
    file.take(SUMMARY_HEAD_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let head: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(SUMMARY_HEAD_LINES)
        .collect();
    (!head.is_empty()).then(|| head.join("\n"))
}

/// The message of the last `POSTMORTEM_END` row of the report.tsv at `report`.
fn last_end(report: &std::path::Path) -> Option<String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(report).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(REPORT_TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    // Columns: timestamp_ms, kind, iteration, duration_ms, exit_code, output_bytes,
    // output_lines, output_path, message, tasks_done, tasks_total.
    text.lines().rev().find_map(|line| {
        let cols: Vec<&str> = line.split('\t').collect();
        (cols.get(1) == Some(&"POSTMORTEM_END"))
            .then(|| cols.get(8).copied().unwrap_or_default().to_owned())
    })
}
