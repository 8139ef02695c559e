//! `report.tsv` (SPEC §7): one tab-separated row per reported event, under a fixed header, so
//! that a run can be followed and analysed with `cut`, `awk` or a spreadsheet.
//!
//! The file is only ever appended to. Each row goes out in a single `write_all` on a file
//! opened in append mode, so a crash can at worst leave the last row cut short; the next
//! writer starts a fresh line and the reader skips rows that are visibly torn.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::domain::{EventKind, UnixMs};

/// The header columns, in order.
pub(crate) const REPORT_COLUMNS: [&str; 11] = [
    "timestamp_ms",
    "kind",
    "iteration",
    "duration_ms",
    "exit_code",
    "output_bytes",
    "output_lines",
    "output_path",
    "message",
    "tasks_done",
    "tasks_total",
];

/// One row of `report.tsv`. Absent values are written as empty fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReportRow {
    /// When it happened.
    pub(crate) timestamp_ms: UnixMs,
    /// What happened.
    pub(crate) kind: EventKind,
    /// The iteration label (`3`, `3A2`, `3R1`, ...), empty for run-level rows.
    pub(crate) iteration: String,
    /// How long the step took.
    pub(crate) duration_ms: Option<u64>,
    /// The process exit code.
    pub(crate) exit_code: Option<i32>,
    /// Size of the output.
    pub(crate) output_bytes: Option<u64>,
    /// Lines of the output.
    pub(crate) output_lines: Option<u64>,
    /// Where the output is.
    pub(crate) output_path: Option<PathBuf>,
    /// Free text, e.g. `reason=complete_plan` on `RUN_END`.
    pub(crate) message: String,
    /// Ticked tasks of the plan.
    pub(crate) tasks_done: Option<u32>,
    /// All tasks of the plan.
    pub(crate) tasks_total: Option<u32>,
}

impl ReportRow {
    /// A row of `kind` at `timestamp_ms` with every other field empty.
    #[cfg(test)]
    pub(crate) fn new(timestamp_ms: UnixMs, kind: EventKind) -> Self {
        Self {
            timestamp_ms,
            kind,
            iteration: String::new(),
            duration_ms: None,
            exit_code: None,
            output_bytes: None,
            output_lines: None,
            output_path: None,
            message: String::new(),
            tasks_done: None,
            tasks_total: None,
        }
    }

    /// The row as one line of `report.tsv`, newline included, with every field sanitised.
    pub(crate) fn to_line(&self) -> String {
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        let path = self
            .output_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fields = [
            self.timestamp_ms.to_string(),
            self.kind.as_str().to_owned(),
            sanitize_field(&self.iteration),
            opt(self.duration_ms),
            opt(self.exit_code),
            opt(self.output_bytes),
            opt(self.output_lines),
            sanitize_field(&path),
            sanitize_field(&self.message),
            opt(self.tasks_done),
            opt(self.tasks_total),
        ];
        let mut line = fields.join("\t");
        line.push('\n');
        line
    }
}

/// A field made safe for TSV: tabs, carriage returns and newlines become spaces.
pub(crate) fn sanitize_field(text: &str) -> String {
    text.replace(['\t', '\r', '\n'], " ")
}

/// Appends rows to a `report.tsv`, writing the header first when the file is new or empty.
#[derive(Debug)]
pub(crate) struct ReportWriter {
    file: File,
}

impl ReportWriter {
    /// Opens (or creates) the report at `path` for appending. Writes the header if the file is
    /// empty, and ends a row torn by an earlier crash so the next row starts on its own line.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(super::files::PRIVATE_FILE_MODE)
            .open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            let mut header = REPORT_COLUMNS.join("\t");
            header.push('\n');
            file.write_all(header.as_bytes())?;
        } else {
            file.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        file.flush()?;
        Ok(Self { file })
    }

    /// Appends one row as a single write.
    pub(crate) fn append(&mut self, row: &ReportRow) -> io::Result<()> {
        self.file.write_all(row.to_line().as_bytes())?;
        self.file.flush()
    }
}

/// Reads and parses a `report.tsv` (see [`parse_report`]).
#[cfg(test)]
pub(crate) fn read_report(path: &Path) -> io::Result<Vec<ReportRow>> {
    let bytes = std::fs::read(path)?;
    parse_report(&String::from_utf8_lossy(&bytes))
}

/// Parses the text of a `report.tsv`: the header line, then rows. Lines that do not have
/// exactly 11 fields, and a last line without its newline, are rows torn by a crash and are
/// skipped; a complete row with a bad value is an `InvalidData` error naming its line.
#[cfg(test)]
pub(crate) fn parse_report(text: &str) -> io::Result<Vec<ReportRow>> {
    let mut lines = text.split_inclusive('\n');
    let header = lines.next().unwrap_or_default();
    if header.trim_end_matches(['\r', '\n']) != REPORT_COLUMNS.join("\t") {
        return Err(invalid(1, "missing or unexpected report.tsv header"));
    }
    let mut rows = Vec::new();
    for (i, raw) in lines.enumerate() {
        let line_no = i + 2;
        let Some(line) = raw.strip_suffix('\n') else {
            continue;
        };
        let fields: Vec<&str> = line.split('\t').collect();
        if let [
            ts,
            kind,
            iteration,
            duration,
            exit,
            bytes,
            nlines,
            path,
            message,
            done,
            total,
        ] = fields[..]
        {
            rows.push(ReportRow {
                timestamp_ms: required(line_no, "timestamp_ms", ts)?,
                kind: kind
                    .parse()
                    .map_err(|e: crate::domain::ParseEnumError| invalid(line_no, &e.to_string()))?,
                iteration: iteration.to_owned(),
                duration_ms: optional(line_no, "duration_ms", duration)?,
                exit_code: optional(line_no, "exit_code", exit)?,
                output_bytes: optional(line_no, "output_bytes", bytes)?,
                output_lines: optional(line_no, "output_lines", nlines)?,
                output_path: (!path.is_empty()).then(|| PathBuf::from(path)),
                message: message.to_owned(),
                tasks_done: optional(line_no, "tasks_done", done)?,
                tasks_total: optional(line_no, "tasks_total", total)?,
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
fn required<T: std::str::FromStr>(line: usize, column: &str, text: &str) -> io::Result<T> {
    text.parse()
        .map_err(|_| invalid(line, &format!("bad {column} `{text}`")))
}

#[cfg(test)]
fn optional<T: std::str::FromStr>(line: usize, column: &str, text: &str) -> io::Result<Option<T>> {
    if text.is_empty() {
        Ok(None)
    } else {
        required(line, column, text).map(Some)
    }
}

#[cfg(test)]
fn invalid(line: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("report.tsv line {line}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp_ms\tkind\titeration\tduration_ms\texit_code\toutput_bytes\toutput_lines\toutput_path\tmessage\ttasks_done\ttasks_total\n";

    fn full_row() -> ReportRow {
        ReportRow {
            timestamp_ms: 1_700_000_000_123,
            kind: EventKind::IterationEnd,
            iteration: "3R1".into(),
            duration_ms: Some(4200),
            exit_code: Some(0),
            output_bytes: Some(1234),
            output_lines: Some(56),
            output_path: Some(PathBuf::from("/r/iter-03R01.log")),
            message: "ok".into(),
            tasks_done: Some(2),
            tasks_total: Some(5),
        }
    }

    #[test]
    fn header_is_written_once_across_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.tsv");
        let mut a = ReportWriter::open(&p).unwrap();
        a.append(&ReportRow::new(1, EventKind::RunStart)).unwrap();
        drop(a);
        let mut b = ReportWriter::open(&p).unwrap();
        b.append(&ReportRow::new(2, EventKind::RunEnd)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("timestamp_ms").count(), 1);
        assert!(text.starts_with(HEADER));
        assert_eq!(
            text,
            format!("{HEADER}1\tRUN_START\t\t\t\t\t\t\t\t\t\n2\tRUN_END\t\t\t\t\t\t\t\t\t\n")
        );
    }

    #[test]
    fn header_is_written_into_an_existing_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.tsv");
        std::fs::write(&p, "").unwrap();
        ReportWriter::open(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), HEADER);
    }

    #[test]
    fn fields_are_sanitised() {
        let mut row = ReportRow::new(5, EventKind::WarnMalformedComplete);
        row.iteration = "3\tA2".into();
        row.message = "line one\nline\ttwo\r\nend".into();
        row.output_path = Some(PathBuf::from("/r/a\tb.log"));
        let line = row.to_line();
        assert_eq!(line.matches('\t').count(), 10);
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields[2], "3 A2");
        assert_eq!(fields[7], "/r/a b.log");
        assert_eq!(fields[8], "line one line two  end");
    }

    #[test]
    fn empty_options_render_as_empty_fields() {
        let mut row = ReportRow::new(7, EventKind::Heartbeat);
        row.iteration = "4".into();
        row.exit_code = Some(-1);
        assert_eq!(row.to_line(), "7\tHEARTBEAT\t4\t\t-1\t\t\t\t\t\t\n");
        let full = full_row().to_line();
        assert_eq!(
            full,
            "1700000000123\tITERATION_END\t3R1\t4200\t0\t1234\t56\t/r/iter-03R01.log\tok\t2\t5\n"
        );
    }

    #[test]
    fn rows_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.tsv");
        let mut w = ReportWriter::open(&p).unwrap();
        let mut end = ReportRow::new(9, EventKind::RunEnd);
        end.message = "reason=complete_plan".into();
        w.append(&full_row()).unwrap();
        w.append(&end).unwrap();
        assert_eq!(read_report(&p).unwrap(), vec![full_row(), end]);
    }

    #[test]
    fn a_torn_row_is_skipped_and_the_next_row_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.tsv");
        std::fs::write(
            &p,
            format!("{HEADER}1\tRUN_START\t\t\t\t\t\t\t\t\t\n2\tITERATION_ST"),
        )
        .unwrap();
        // Before another writer opens it, the torn last line has no newline and is ignored.
        assert_eq!(read_report(&p).unwrap().len(), 1);
        let mut w = ReportWriter::open(&p).unwrap();
        w.append(&ReportRow::new(3, EventKind::RunEnd)).unwrap();
        let rows = read_report(&p).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.kind).collect::<Vec<_>>(),
            vec![EventKind::RunStart, EventKind::RunEnd]
        );
    }

    #[test]
    fn bad_values_and_headers_are_errors() {
        let err = parse_report(&format!("{HEADER}x\tRUN_START\t\t\t\t\t\t\t\t\t\n")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_report(&format!("{HEADER}1\tNOPE\t\t\t\t\t\t\t\t\t\n")).is_err());
        assert!(parse_report("a\tb\n").is_err());
        assert!(parse_report("").is_err());
        assert_eq!(parse_report(HEADER).unwrap(), vec![]);
    }
}
