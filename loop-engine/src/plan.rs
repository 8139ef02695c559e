//! The plan file (SPEC §3): checklist counts and the first open task.
//!
//! The loop trusts the plan file over anything the agent says, so this module is the single
//! reader of checklist syntax. It is pure text logic: callers read the file and hand over its
//! contents, which keeps every rule here testable without a filesystem.
//!
//! A task is a line (outside fenced code blocks) of the form `- [c] text` or `* [c] text`, with
//! any leading indentation, where `c` is one of the markers of [`Marker`]. A marker directly
//! followed by `?` (`- [ ]?`) is a manual QA item: counted in [`PlanCounts::manual`], never
//! returned as a task.

use serde::{Deserialize, Serialize};

/// The state of one checklist task, as written between the brackets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// `[ ]`: open, waiting for the agent.
    Open,
    /// `[~]`: the agent could not finish it (reason under `## Blockers Discovered`).
    Blocked,
    /// `[x]` or `[X]`: implemented, awaiting review.
    Implemented,
    /// `[r]` or `[R]`: implemented and reviewed.
    Reviewed,
}

impl Marker {
    /// Reads the character between the brackets; `None` for anything that is not a marker.
    pub fn from_char(c: char) -> Option<Self> {
        match c {
            ' ' => Some(Self::Open),
            '~' => Some(Self::Blocked),
            'x' | 'X' => Some(Self::Implemented),
            'r' | 'R' => Some(Self::Reviewed),
            _ => None,
        }
    }

    /// The canonical character written by [`set_marker`].
    pub fn as_char(self) -> char {
        match self {
            Self::Open => ' ',
            Self::Blocked => '~',
            Self::Implemented => 'x',
            Self::Reviewed => 'R',
        }
    }

    /// Whether the task still has to be worked by the agent (`[ ]` or `[~]`).
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Open | Self::Blocked)
    }
}

/// One task line of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanTask {
    /// 0-based line index in the plan text (lines split on `\n`).
    pub line: usize,
    /// The task's state.
    pub marker: Marker,
    /// The task text after the marker, trimmed.
    pub text: String,
}

/// The counts of SPEC §3, read from one version of the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCounts {
    /// Tasks the agent still has to work: `[ ]` and `[~]`.
    pub pending: u32,
    /// Tasks awaiting review: `[x]` and `[X]`.
    pub to_review: u32,
    /// Tasks implemented (reviewed or not): `[x] [X] [r] [R]` (`tasks_done`).
    pub done: u32,
    /// Every task: `[ ] [x] [X] [r] [R] [~]` (`tasks_total`).
    pub total: u32,
    /// Blocked tasks: `[~]`.
    pub blocked: u32,
    /// Manual QA items (`[ ]?`), which the agent never works and which count nowhere else.
    pub manual: u32,
}

impl PlanCounts {
    /// No open or blocked task is left (review may still be outstanding).
    pub fn is_done(&self) -> bool {
        self.pending == 0
    }

    /// Some implemented tasks still await review.
    pub fn review_backlog(&self) -> bool {
        self.to_review > 0
    }
}

/// What one line of the plan is.
enum LineKind {
    /// A task, with the byte offset of its marker character inside the line.
    Task {
        marker: Marker,
        marker_at: usize,
        text: String,
    },
    /// A manual QA item (`[ ]?`).
    Manual,
    /// Anything else, including every line inside a fence.
    Other,
}

/// An open code fence: its character and the length of its opening run.
#[derive(Clone, Copy)]
struct Fence {
    ch: char,
    len: usize,
}

/// Returns the fence run (character and length) a line starts with, if any, ignoring
/// indentation, plus what follows the run.
fn fence_run(line: &str) -> Option<(Fence, &str)> {
    let body = line.trim_start();
    let ch = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = body.chars().take_while(|c| *c == ch).count();
    // Both fence characters are one byte, so the run length is also its byte length.
    (len >= 3).then(|| (Fence { ch, len }, &body[len..]))
}

/// Classifies every line of `text`, tracking fences so that checklists inside code blocks
/// (examples in a plan, for instance) never count.
fn classify(text: &str) -> impl Iterator<Item = (usize, LineKind)> + '_ {
    let mut fence: Option<Fence> = None;
    text.split('\n').enumerate().map(move |(index, raw)| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        match (fence, fence_run(line)) {
            // A fence closes only with the same character, at least as long, and nothing but
            // whitespace after it; so a ~~~ line inside a ``` block stays content.
            (Some(open), Some((run, rest)))
                if run.ch == open.ch && run.len >= open.len && rest.trim().is_empty() =>
            {
                fence = None;
                (index, LineKind::Other)
            }
            (Some(_), _) => (index, LineKind::Other),
            (None, Some((run, _))) => {
                fence = Some(run);
                (index, LineKind::Other)
            }
            (None, None) => (index, parse_task_line(line)),
        }
    })
}

/// Parses one line outside fences.
fn parse_task_line(line: &str) -> LineKind {
    let indent = line.len() - line.trim_start().len();
    let body = &line[indent..];
    let mut chars = body.char_indices();
    if !matches!(chars.next(), Some((_, '-' | '*'))) {
        return LineKind::Other;
    }
    // At least one space or tab between the bullet and the bracket, as Markdown requires.
    let after_bullet = &body[1..];
    let gap = after_bullet.len() - after_bullet.trim_start_matches([' ', '\t']).len();
    if gap == 0 {
        return LineKind::Other;
    }
    let rest = &after_bullet[gap..];
    let mut rest_chars = rest.chars();
    let (Some('['), Some(c), Some(']')) = (rest_chars.next(), rest_chars.next(), rest_chars.next())
    else {
        return LineKind::Other;
    };
    let Some(marker) = Marker::from_char(c) else {
        return LineKind::Other;
    };
    // Every marker character is ASCII, so `[c]` is exactly three bytes.
    let tail = &rest[3..];
    if tail.starts_with('?') {
        return LineKind::Manual;
    }
    // `- [x]foo` is not a checklist item in any Markdown flavour; require a separator.
    if !(tail.is_empty() || tail.starts_with([' ', '\t'])) {
        return LineKind::Other;
    }
    LineKind::Task {
        marker,
        marker_at: indent + 1 + gap + 1,
        text: tail.trim().to_owned(),
    }
}

/// Every task of the plan, in file order (manual `[ ]?` items and fenced lines excluded).
pub fn tasks(text: &str) -> Vec<PlanTask> {
    classify(text)
        .filter_map(|(line, kind)| match kind {
            LineKind::Task { marker, text, .. } => Some(PlanTask { line, marker, text }),
            LineKind::Manual | LineKind::Other => None,
        })
        .collect()
}

/// The counts of SPEC §3.
pub fn counts(text: &str) -> PlanCounts {
    let mut counts = PlanCounts::default();
    for (_, kind) in classify(text) {
        match kind {
            LineKind::Task { marker, .. } => {
                counts.total += 1;
                match marker {
                    Marker::Open => counts.pending += 1,
                    Marker::Blocked => {
                        counts.pending += 1;
                        counts.blocked += 1;
                    }
                    Marker::Implemented => {
                        counts.to_review += 1;
                        counts.done += 1;
                    }
                    Marker::Reviewed => counts.done += 1,
                }
            }
            LineKind::Manual => counts.manual += 1,
            LineKind::Other => {}
        }
    }
    counts
}

/// The task the agent should work next: the first `[ ]`, or when none is left, the first
/// `[~]` (a blocked task is retried only once nothing else is open).
pub fn first_open_task(text: &str) -> Option<PlanTask> {
    let all = tasks(text);
    let open = all.iter().position(|t| t.marker == Marker::Open);
    let pick = open.or_else(|| all.iter().position(|t| t.marker == Marker::Blocked))?;
    all.into_iter().nth(pick)
}

/// The first task awaiting review (`[x]` or `[X]`).
pub fn first_to_review(text: &str) -> Option<PlanTask> {
    tasks(text)
        .into_iter()
        .find(|t| t.marker == Marker::Implemented)
}

/// Rewrites the marker of the task on 0-based line `line`, leaving every other byte of the
/// text (line endings included) as it was. Returns `None` when that line is not a task.
///
/// When the task already has the requested marker the text comes back unchanged, so an `[X]`
/// stays an `[X]`; otherwise the canonical character of [`Marker::as_char`] is written.
pub fn set_marker(text: &str, line: usize, marker: Marker) -> Option<String> {
    let (current, marker_at) = classify(text).find_map(|(index, kind)| match kind {
        LineKind::Task {
            marker, marker_at, ..
        } if index == line => Some((marker, marker_at)),
        _ => None,
    })?;
    if current == marker {
        return Some(text.to_owned());
    }
    let line_start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
    let at = line_start + marker_at;
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..at]);
    out.push(marker.as_char());
    // The old marker is one ASCII byte (see `Marker::from_char`).
    out.push_str(&text[at + 1..]);
    Some(out)
}

/// A normalised form of a task's text: lowercase, alphanumeric words separated by single
/// spaces. The watchdog compares keys to notice the same task being worked again and again,
/// even when the agent reformats its text (emphasis, punctuation, spacing) in between.
pub fn task_key(task: &PlanTask) -> String {
    task.text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
# Plan

## Phase 1
- [ ] open one
- [~] blocked one
- [x] implemented lower
- [X] implemented upper
- [r] reviewed lower
- [R] reviewed upper
- [ ]? manual check
- [ ] open two
";

    #[test]
    fn every_marker_is_read() {
        let all = tasks(PLAN);
        let got: Vec<(Marker, &str)> = all.iter().map(|t| (t.marker, t.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Marker::Open, "open one"),
                (Marker::Blocked, "blocked one"),
                (Marker::Implemented, "implemented lower"),
                (Marker::Implemented, "implemented upper"),
                (Marker::Reviewed, "reviewed lower"),
                (Marker::Reviewed, "reviewed upper"),
                (Marker::Open, "open two"),
            ]
        );
        let lines: Vec<usize> = tasks(PLAN).iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn counts_follow_the_spec_table() {
        assert_eq!(
            counts(PLAN),
            PlanCounts {
                pending: 3,
                to_review: 2,
                done: 4,
                total: 7,
                blocked: 1,
                manual: 1,
            }
        );
        let c = counts(PLAN);
        assert!(!c.is_done());
        assert!(c.review_backlog());
    }

    #[test]
    fn done_and_backlog_flags() {
        let c = counts("- [x] a\n- [R] b\n- [ ]? manual\n");
        assert!(c.is_done(), "manual items never keep a plan open");
        assert!(c.review_backlog());
        let c = counts("- [R] a\n- [r] b\n");
        assert!(c.is_done());
        assert!(!c.review_backlog());
        assert_eq!(counts(""), PlanCounts::default());
    }

    #[test]
    fn fenced_lines_never_count() {
        let text = "\
- [ ] real
```markdown
- [ ] example inside backticks
~~~
- [ ] still inside: a tilde line does not close a backtick fence
```
~~~~
- [x] inside tildes
```
- [ ] still inside: backticks do not close a tilde fence
~~~
~~~~
- [R] after both
````
- [ ] inside a long fence
```
- [ ] a shorter run does not close it
````
- [~] last
";
        let got: Vec<String> = tasks(text).into_iter().map(|t| t.text).collect();
        assert_eq!(got, vec!["real", "after both", "last"]);
        assert_eq!(counts(text).total, 3);
    }

    #[test]
    fn fence_with_info_string_opens_but_only_a_bare_run_closes() {
        let text = "```rust\n- [ ] a\n``` not a close\n- [ ] b\n```\n- [ ] c\n";
        let got: Vec<String> = tasks(text).into_iter().map(|t| t.text).collect();
        assert_eq!(got, vec!["c"]);
    }

    #[test]
    fn manual_items_are_ignored() {
        let text = "- [ ]? check the UI by hand\n- [x]? ticked manual item\n- [ ] real\n";
        let all = tasks(text);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].text, "real");
        assert_eq!(counts(text).manual, 2);
        assert_eq!(counts(text).total, 1);
    }

    #[test]
    fn indentation_and_star_bullets() {
        let text = "  - [ ] two spaces\n\t* [x] tab and star\n        - [R] deep\n-[ ] no gap\n+ [ ] plus\n";
        let got: Vec<(Marker, String)> = tasks(text)
            .into_iter()
            .map(|t| (t.marker, t.text))
            .collect();
        assert_eq!(
            got,
            vec![
                (Marker::Open, "two spaces".to_owned()),
                (Marker::Implemented, "tab and star".to_owned()),
                (Marker::Reviewed, "deep".to_owned()),
            ]
        );
    }

    #[test]
    fn crlf_line_endings() {
        let text = "# Plan\r\n- [ ] first\r\n```\r\n- [ ] fenced\r\n```\r\n- [x] second\r\n";
        let all = tasks(text);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].text, "first");
        assert_eq!(all[0].line, 1);
        assert_eq!(all[1].text, "second");
        assert_eq!(all[1].line, 5);
        assert_eq!(counts(text).pending, 1);
    }

    #[test]
    fn lower_and_upper_x_are_both_implemented() {
        let c = counts("- [x] a\n- [X] b\n");
        assert_eq!((c.to_review, c.done, c.pending), (2, 2, 0));
    }

    #[test]
    fn brackets_mid_line_are_not_tasks() {
        let text = "Mark tasks with - [ ] when open.\nSome text [ ] here\n- see [x] later\n- [?] unknown marker\n- [x]glued\n";
        assert!(tasks(text).is_empty());
        assert_eq!(counts(text), PlanCounts::default());
    }

    #[test]
    fn empty_task_text_is_still_a_task() {
        let all = tasks("- [ ]\n- [x]   \n");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].text, "");
        assert_eq!(all[1].marker, Marker::Implemented);
    }

    #[test]
    fn first_open_prefers_open_over_blocked() {
        let text = "- [~] blocked first\n- [x] done\n- [ ] open later\n";
        let t = first_open_task(text).map(|t| t.text);
        assert_eq!(t.as_deref(), Some("open later"));
        let text = "- [x] done\n- [~] blocked a\n- [~] blocked b\n";
        assert_eq!(
            first_open_task(text).map(|t| (t.line, t.text)),
            Some((1, "blocked a".to_owned()))
        );
        assert_eq!(first_open_task("- [x] a\n- [R] b\n- [ ]? m\n"), None);
    }

    #[test]
    fn first_to_review_finds_either_x() {
        let text = "- [R] a\n- [ ] b\n- [X] c\n- [x] d\n";
        let t = first_to_review(text);
        assert_eq!(t.map(|t| (t.line, t.text)), Some((2, "c".to_owned())));
        assert_eq!(first_to_review("- [R] a\n- [ ] b\n"), None);
    }

    #[test]
    fn set_marker_round_trip_keeps_every_other_byte() {
        let text = "# Plan\r\n  * [ ] first task  \r\n- [x] second\r\n```\r\n- [ ] fenced\r\n```\r\nno newline at end - [ ]";
        let ticked = set_marker(text, 1, Marker::Implemented).unwrap_or_default();
        assert_eq!(ticked, text.replacen("* [ ] first", "* [x] first", 1));
        let reviewed = set_marker(&ticked, 1, Marker::Reviewed).unwrap_or_default();
        assert_eq!(reviewed, text.replacen("* [ ] first", "* [R] first", 1));
        let blocked = set_marker(&reviewed, 2, Marker::Blocked).unwrap_or_default();
        assert_eq!(
            blocked,
            reviewed.replacen("- [x] second", "- [~] second", 1)
        );
        let back = set_marker(
            &set_marker(&blocked, 1, Marker::Open).unwrap_or_default(),
            2,
            Marker::Implemented,
        )
        .unwrap_or_default();
        assert_eq!(back, text);
        assert_eq!(tasks(&back), tasks(text));
    }

    #[test]
    fn set_marker_refuses_non_task_lines() {
        let text = "# Plan\n```\n- [ ] fenced\n```\n- [ ]? manual\n- [ ] real\n";
        assert_eq!(set_marker(text, 0, Marker::Implemented), None);
        assert_eq!(set_marker(text, 2, Marker::Implemented), None);
        assert_eq!(set_marker(text, 4, Marker::Implemented), None);
        assert_eq!(set_marker(text, 99, Marker::Implemented), None);
        assert!(set_marker(text, 5, Marker::Implemented).is_some());
    }

    #[test]
    fn set_marker_keeps_an_upper_x_when_unchanged() {
        let text = "- [X] a\n";
        assert_eq!(
            set_marker(text, 0, Marker::Implemented).as_deref(),
            Some(text)
        );
        assert_eq!(
            set_marker(text, 0, Marker::Reviewed).as_deref(),
            Some("- [R] a\n")
        );
    }

    #[test]
    fn set_marker_handles_multibyte_text() {
        let text = "- [ ] café ☕\n- [ ] naïve\n";
        let out = set_marker(text, 1, Marker::Implemented).unwrap_or_default();
        assert_eq!(out, "- [ ] café ☕\n- [x] naïve\n");
    }

    #[test]
    fn task_key_ignores_formatting() {
        let key = |s: &str| {
            task_key(&PlanTask {
                line: 0,
                marker: Marker::Open,
                text: s.to_owned(),
            })
        };
        assert_eq!(
            key("Implement **the** `Store`  trait."),
            "implement the store trait"
        );
        assert_eq!(
            key("implement the store trait"),
            key("Implement the Store trait!")
        );
        assert_ne!(
            key("implement the store trait"),
            key("implement the vcs trait")
        );
    }
}
