//! Artifacts (SPEC §7): the run folder, `report.tsv`, `summary.json`, `run.log`, tails,
//! mirroring and checksums.
//!
//! Everything here is synchronous `std::fs`. Artifact writes are small and local, and keeping
//! them blocking keeps them simple to reason about (atomic renames, one `write_all` per line).
//! The async engine calls the heavier ones (tails and checksums of large agent logs, mirroring)
//! from `tokio::task::spawn_blocking`.
//!
//! - [`RunFolder`] names every file of a run folder, in the workspace or the global log dir.
//! - [`ReportWriter`] appends rows to `report.tsv`; [`read_report`] parses it back.
//! - [`Summary`] and [`write_summary`] produce `summary.json`.
//! - [`RunLog`] appends timestamped lines to `run.log`.
//! - [`tail_lines`], [`tail_of_text`] and [`write_tail`] produce `iter-<slug>.tail.txt`.
//! - [`write_atomic`], [`sha256_file`], [`mirror_file`] and [`describe`] handle whole files.

mod files;
mod layout;
mod report;
mod run_log;
mod summary;
mod tail;

pub use files::{
    ArtifactFile, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, describe, mirror_file, private_options,
    sha256_file, write_atomic, write_derived, write_private,
};
pub use layout::RunFolder;
pub use report::{
    REPORT_COLUMNS, ReportRow, ReportWriter, parse_report, read_report, sanitize_field,
};
pub use run_log::{RunLog, rfc3339};
pub use summary::{Summary, read_summary, write_summary};
pub use tail::{DEFAULT_TAIL_LINES, tail_lines, tail_of_text, write_tail};
