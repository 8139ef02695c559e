//! Artifacts (SPEC §7): the run folder, `report.tsv`, `summary.json`, `run.log`, tails,
//! mirroring and checksums.
//!
//! Everything here is synchronous `std::fs`. Artifact writes are small and local, and keeping
//! them blocking keeps them simple to reason about (atomic renames, one `write_all` per line).
//! The async engine calls the heavier ones (tails and checksums of large agent logs, mirroring)
//! from `tokio::task::spawn_blocking`.
//!
//! - [`RunFolder`] names every file of a run folder, in the workspace or the global log dir.
//! - [`ReportWriter`] appends rows to `report.tsv` (tests parse it back).
//! - [`Summary`] and [`write_summary`] produce `summary.json`.
//! - [`RunLog`] appends timestamped lines to `run.log`.
//! - [`tail_lines`] and [`write_tail`] produce `iter-<slug>.tail.txt`.
//! - [`write_atomic`], [`mirror_file`] and [`describe`] handle whole files (with checksums).

mod files;
mod layout;
mod report;
mod run_log;
mod summary;
mod tail;

pub(crate) use files::{
    ArtifactFile, describe, mirror_file, private_options, write_atomic, write_derived,
    write_private,
};
pub(crate) use layout::RunFolder;
pub(crate) use report::{ReportRow, ReportWriter};
pub(crate) use run_log::{RunLog, rfc3339};
pub(crate) use summary::{Summary, write_summary};
pub(crate) use tail::{TailSize, count_lines, tail_lines, write_tail};
