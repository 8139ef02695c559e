//! `run.log` (SPEC §7): the human-readable diary of a run, one `[timestamp] message` line per
//! entry, and the RFC 3339 formatter it uses (hand-written, so the engine needs no date crate
//! for the one format it prints).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::domain::UnixMs;

/// Appends to a run's `run.log`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunLog;

impl RunLog {
    /// Appends `[<now, RFC 3339 UTC>] <line>` to the log at `path`, creating it if needed.
    #[cfg(test)]
    pub(crate) fn append(path: &Path, line: &str) -> io::Result<()> {
        Self::append_at(path, crate::domain::now_ms(), line)
    }

    /// Appends `[<at, RFC 3339 UTC>] <line>`. Newlines inside `line` become spaces, so every
    /// call adds exactly one line; the line goes out in a single write on an append-mode file,
    /// so concurrent writers and crashes cannot interleave halves of entries.
    pub(crate) fn append_at(path: &Path, at: UnixMs, line: &str) -> io::Result<()> {
        let text = format!("[{}] {}\n", rfc3339(at), line.replace(['\r', '\n'], " "));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(super::files::PRIVATE_FILE_MODE)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.flush()
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g.
/// `2024-02-29T12:34:56.789Z`. Instants before 1970 are formatted too.
pub(crate) fn rfc3339(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): exact for every `i64` day count derived from an `i64` of milliseconds.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(946_684_799_999), "1999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        assert!(rfc3339(i64::MAX).ends_with('Z'));
        assert!(rfc3339(i64::MIN).ends_with('Z'));
    }

    #[test]
    fn append_writes_one_prefixed_line_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.log");
        RunLog::append_at(&p, 0, "run started").unwrap();
        RunLog::append_at(&p, 1_709_210_096_789, "two\nlines\r\n").unwrap();
        RunLog::append(&p, "now").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "[1970-01-01T00:00:00.000Z] run started");
        assert_eq!(lines[1], "[2024-02-29T12:34:56.789Z] two lines  ");
        assert!(
            lines[2].starts_with("[20") && lines[2].ends_with("Z] now"),
            "{}",
            lines[2]
        );
    }
}
