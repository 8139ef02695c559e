//! Rendering of the review commands: a run's diff (whole, or `--stat`) and the worktree
//! table. Colour only on a terminal; piped output is plain text a pager or `git apply`-minded
//! reader takes as it is.

use loop_http::api::{DiffResponse, WorktreeResource};

use crate::render::table;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

fn paint(text: &str, code: &str, colour: bool) -> String {
    if colour {
        format!("{code}{text}{RESET}")
    } else {
        text.to_owned()
    }
}

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// `1.2 MiB`, `340 KiB`, `12 B`.
pub(crate) fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    if n >= KIB * KIB * KIB {
        format!("{:.1} GiB", n as f64 / (KIB * KIB * KIB) as f64)
    } else if n >= KIB * KIB {
        format!("{:.1} MiB", n as f64 / (KIB * KIB) as f64)
    } else if n >= KIB {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

/// The header of a diff: what is compared, the counts, the commits.
fn header(d: &DiffResponse, colour: bool) -> String {
    let mut out = format!(
        "{} against {} ({}..{})\n",
        paint(&d.head_ref, BOLD, colour),
        d.base_ref,
        short(&d.diff.base_sha),
        short(&d.diff.head_sha)
    );
    let s = &d.diff.stats;
    out.push_str(&format!(
        "{} commit{}, {} file{} changed, {}, {}\n",
        d.diff.commits.len(),
        if d.diff.commits.len() == 1 { "" } else { "s" },
        s.files_changed,
        if s.files_changed == 1 { "" } else { "s" },
        paint(&format!("+{}", s.additions), GREEN, colour),
        paint(&format!("-{}", s.deletions), RED, colour),
    ));
    for c in &d.diff.commits {
        let subject = c.message.lines().next().unwrap_or_default();
        out.push_str(&format!(
            "  {} {subject} ({}: {} files, +{} -{})\n",
            paint(short(&c.sha), YELLOW, colour),
            c.author,
            c.stats.files_changed,
            c.stats.additions,
            c.stats.deletions
        ));
    }
    out
}

/// `loopctl diff --stat`: the header and one line per file.
pub(crate) fn diff_stat(d: &DiffResponse, colour: bool) -> String {
    let mut out = header(d, colour);
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .diff
        .files
        .iter()
        .map(|f| {
            let counts = if f.binary {
                "binary".to_owned()
            } else {
                format!(
                    "{} {}",
                    paint(&format!("+{}", f.additions), GREEN, colour),
                    paint(&format!("-{}", f.deletions), RED, colour)
                )
            };
            let path = match &f.old_path {
                Some(old) => format!("{old} -> {}", f.path),
                None => f.path.clone(),
            };
            vec![status_word(f.status), path, counts]
        })
        .collect();
    out.push_str(&table(&["STATUS", "FILE", "LINES"], &rows));
    if d.diff.truncated {
        out.push_str(&truncation_note(d));
    }
    out
}

fn status_word(status: loop_engine::backend::FileStatus) -> String {
    use loop_engine::backend::FileStatus;
    match status {
        FileStatus::Added => "added",
        FileStatus::Modified => "modified",
        FileStatus::Deleted => "deleted",
        FileStatus::Renamed => "renamed",
    }
    .to_owned()
}

fn truncation_note(d: &DiffResponse) -> String {
    format!(
        "(the diff was cut to keep it small; the whole of it: git diff {} {})\n",
        short(&d.diff.base_sha),
        short(&d.diff.head_sha)
    )
}

/// `loopctl diff`: the header, then every file's patch (coloured on a terminal).
pub(crate) fn diff(d: &DiffResponse, colour: bool) -> String {
    let mut out = header(d, colour);
    for f in &d.diff.files {
        out.push('\n');
        if f.patch.is_empty() {
            out.push_str(&paint(
                &format!("diff {} ({})", f.path, status_word(f.status)),
                BOLD,
                colour,
            ));
            out.push('\n');
        }
        for line in f.patch.lines() {
            let code = if line.starts_with("diff --git")
                || line.starts_with("index ")
                || line.starts_with("--- ")
                || line.starts_with("+++ ")
                || line.starts_with("new file")
                || line.starts_with("deleted file")
                || line.starts_with("rename ")
                || line.starts_with("similarity ")
            {
                BOLD
            } else if line.starts_with("@@") {
                CYAN
            } else if line.starts_with('+') {
                GREEN
            } else if line.starts_with('-') {
                RED
            } else {
                ""
            };
            if code.is_empty() {
                out.push_str(line);
            } else {
                out.push_str(&paint(line, code, colour));
            }
            out.push('\n');
        }
        if f.truncated {
            out.push_str(&paint(
                &format!(
                    "... patch of {} cut ({} bytes shown)",
                    f.path,
                    f.patch.len()
                ),
                YELLOW,
                colour,
            ));
            out.push('\n');
        }
    }
    if d.diff.truncated {
        out.push('\n');
        out.push_str(&truncation_note(d));
    }
    out
}

/// `loopctl worktrees`: one row per run.
pub(crate) fn worktrees(list: &[WorktreeResource], colour: bool) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            let id = w.run_id.to_string();
            vec![
                id.get(..13).unwrap_or(&id).to_owned(),
                w.name.clone(),
                crate::render::status(w.status, colour),
                w.review_status.to_string(),
                w.branch.clone(),
                w.size_bytes.map_or_else(|| "-".into(), bytes),
                if w.present {
                    if w.prunable {
                        "present (prunable)"
                    } else {
                        "present"
                    }
                    .to_owned()
                } else {
                    "gone".to_owned()
                },
                w.path.display().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "NAME", "STATUS", "REVIEW", "BRANCH", "SIZE", "ON DISK", "PATH",
        ],
        &rows,
    )
}
