//! Tails of agent output (SPEC §7 `iter-<slug>.tail.txt`) and of verification logs.
//!
//! Agent logs can be hundreds of megabytes, so the file tail is found by reading backwards
//! from the end in blocks; only the returned lines are ever held in memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::files::write_derived;

/// Block size for the backwards scan.
const BLOCK: u64 = 64 * 1024;

/// The last `n` lines of the file at `path`, with their line endings as in the file (a last
/// line without a newline stays without one). Invalid UTF-8 is replaced with U+FFFD.
pub(crate) fn tail_lines(path: &Path, n: usize) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if n == 0 || len == 0 {
        return Ok(String::new());
    }
    // Blocks in the order they were read, i.e. from the end of the file backwards.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut remaining = n;
    let mut pos = len;
    while pos > 0 {
        let size = BLOCK.min(pos);
        pos -= size;
        let mut buf = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf)?;
        let is_last_block = pos + size == len;
        let start = line_start(&buf, is_last_block, &mut remaining);
        if let Some(start) = start {
            buf.drain(..start);
            blocks.push(buf);
            break;
        }
        blocks.push(buf);
    }
    let mut out = Vec::with_capacity(blocks.iter().map(Vec::len).sum());
    for block in blocks.iter().rev() {
        out.extend_from_slice(block);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The last `n` lines of `text`, as [`tail_lines`] does for files.
#[cfg(test)]
pub(crate) fn tail_of_text(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let mut remaining = n;
    // A line start found this way is just after a '\n', so it is a char boundary.
    match line_start(text.as_bytes(), true, &mut remaining) {
        Some(start) => &text[start..],
        None => text,
    }
}

/// The size of a written tail, for its report.tsv row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TailSize {
    /// Bytes written.
    pub(crate) bytes: u64,
    /// Lines written (a last line without a newline counts).
    pub(crate) lines: u64,
}

/// Writes the last `n` lines of `log` to `tail_path`, atomically (not synced: the tail is
/// derived from the log and rewritten after every step), and says how big it is.
pub(crate) fn write_tail(log: &Path, tail_path: &Path, n: usize) -> io::Result<TailSize> {
    let tail = tail_lines(log, n)?;
    write_derived(tail_path, tail.as_bytes())?;
    Ok(TailSize {
        bytes: tail.len() as u64,
        lines: count_lines(tail.as_bytes()),
    })
}

/// Lines in `bytes`: its newlines, plus one for a last line without a newline.
pub(crate) fn count_lines(bytes: &[u8]) -> u64 {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    newlines + u64::from(bytes.last().is_some_and(|&b| b != b'\n'))
}

/// Scans `buf` backwards for line breaks, counting down `remaining`; returns the index where
/// the wanted tail starts once the `remaining`-th break before the end is found. When `buf`
/// ends the text, a final newline terminates the last line rather than starting a new one, so
/// it is not counted.
fn line_start(buf: &[u8], ends_text: bool, remaining: &mut usize) -> Option<usize> {
    let mut end = buf.len();
    if ends_text && buf.last() == Some(&b'\n') {
        end -= 1;
    }
    while let Some(i) = buf[..end].iter().rposition(|&b| b == b'\n') {
        *remaining -= 1;
        if *remaining == 0 {
            return Some(i + 1);
        }
        end = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn tail_of_a_large_file_is_exactly_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("iter-01.log");
        let mut text = String::new();
        let mut i = 0u64;
        while text.len() < 5 * 1024 * 1024 {
            writeln!(
                text,
                "line {i} {}",
                "x".repeat(usize::try_from(i % 97).unwrap())
            )
            .unwrap();
            i += 1;
        }
        std::fs::write(&p, &text).unwrap();
        let tail = tail_lines(&p, 200).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let expected = lines[lines.len() - 200..].join("\n") + "\n";
        assert_eq!(tail, expected);
        assert_eq!(tail.lines().count(), 200);
        assert_eq!(tail_of_text(&text, 200), expected);
        // Enough lines to need several 64 KiB blocks.
        let many = lines[lines.len() - 5000..].join("\n") + "\n";
        assert!(many.len() > 4 * 64 * 1024);
        assert_eq!(tail_lines(&p, 5000).unwrap(), many);
    }

    #[test]
    fn lines_spanning_block_boundaries_are_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.log");
        let long = "y".repeat(150_000);
        let text = format!("first\n{long}\nshort\n");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(tail_lines(&p, 2).unwrap(), format!("{long}\nshort\n"));
        assert_eq!(tail_lines(&p, 3).unwrap(), text);
    }

    #[test]
    fn fewer_lines_than_asked_returns_everything() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&p, 200).unwrap(), "a\nb\nc\n");
        assert_eq!(tail_lines(&p, 0).unwrap(), "");
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail_lines(&p, 5).unwrap(), "");
        assert_eq!(tail_of_text("a\nb\n", 10), "a\nb\n");
        assert_eq!(tail_of_text("a\nb\n", 0), "");
    }

    #[test]
    fn a_missing_final_newline_is_kept_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, "a\nb\nc").unwrap();
        assert_eq!(tail_lines(&p, 2).unwrap(), "b\nc");
        assert_eq!(tail_lines(&p, 1).unwrap(), "c");
        assert_eq!(tail_of_text("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_of_text("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail_of_text("a\n\n\n", 2), "\n\n");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.log");
        std::fs::write(&p, b"skip\nok \xff\xfe end\n\xc3\xa9t\xc3\xa9\n").unwrap();
        assert_eq!(
            tail_lines(&p, 2).unwrap(),
            "ok \u{fffd}\u{fffd} end\n\u{e9}t\u{e9}\n"
        );
    }

    #[test]
    fn write_tail_writes_the_tail_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("iter-07.log");
        let tail = dir.path().join("iter-07.tail.txt");
        std::fs::write(&log, "1\n2\n3\n4\n").unwrap();
        write_tail(&log, &tail, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&tail).unwrap(), "3\n4\n");
        assert!(write_tail(&dir.path().join("missing"), &tail, 2).is_err());
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = tail_lines(&dir.path().join("nope"), 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
