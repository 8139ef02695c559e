//! Completion detection (SPEC §5): exact, trailing and malformed completion tokens.

use crate::domain::spelled_enum;

spelled_enum!(
    /// How the completion token is recognised in the agent's output.
    CompletionMode {
        /// The whole output, trimmed, equals the token.
        Exact => "exact",
        /// The last non-empty line, trimmed, equals the token (exact output also counts).
        Trailing => "trailing",
    }
);

/// The token an agent answers with when it believes the plan is done.
pub(crate) const COMPLETION_TOKEN: &str = "<promise>COMPLETE</promise>";

/// How many characters of output a [`Completion::Malformed`] snippet keeps.
const SNIPPET_CHARS: usize = 100;

/// What the agent's output says about completion. An accepted token alone never completes a
/// run: the caller still checks the plan (SPEC §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The token is present where the mode expects it.
    Accepted,
    /// The token is present but not where the mode accepts it (`WARN_MALFORMED_COMPLETE`).
    Malformed {
        /// The first 100 characters of the output, each line break flattened to one space.
        snippet: String,
    },
    /// The token does not occur in the output.
    Absent,
}

impl Completion {
    /// Whether the agent claimed completion in the accepted form.
    #[cfg(test)]
    pub(crate) fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted)
    }
}

/// Looks for the completion token in `output` (for stream-json output, the agent's final
/// result text) according to `mode`.
pub(crate) fn detect(output: &str, mode: CompletionMode) -> Completion {
    if output.trim() == COMPLETION_TOKEN {
        return Completion::Accepted;
    }
    if mode == CompletionMode::Trailing {
        // `str::lines` strips a `\r` before each `\n`, and `trim` takes any stray one.
        let last = output.lines().map(str::trim).rfind(|l| !l.is_empty());
        if last == Some(COMPLETION_TOKEN) {
            return Completion::Accepted;
        }
    }
    if output.contains(COMPLETION_TOKEN) {
        Completion::Malformed {
            snippet: snippet(output),
        }
    } else {
        Completion::Absent
    }
}

/// How many characters of output the `output_head=` of a `WARN_MALFORMED_COMPLETE` row keeps
/// (SPEC §7).
const OUTPUT_HEAD_CHARS: usize = 200;

/// The first [`SNIPPET_CHARS`] characters of `output` on one line: `\r\n`, `\n` and `\r`
/// each become a single space, so the snippet fits a report.tsv field and an event payload.
fn snippet(output: &str) -> String {
    one_line(output, SNIPPET_CHARS)
}

/// The first 200 characters of `output` on one line (as [`Completion::Malformed`]'s
/// snippet, longer): the `output_head=` of the `WARN_MALFORMED_COMPLETE` row.
pub(crate) fn output_head(output: &str) -> String {
    one_line(output, OUTPUT_HEAD_CHARS)
}

fn one_line(output: &str, chars: usize) -> String {
    output
        .replace("\r\n", "\n")
        .chars()
        .take(chars)
        .map(|c| {
            if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use CompletionMode::{Exact, Trailing};

    fn malformed(output: &str) -> Completion {
        Completion::Malformed {
            snippet: snippet(output),
        }
    }

    #[test]
    fn exact_output_is_accepted_in_both_modes() {
        for mode in [Exact, Trailing] {
            assert_eq!(detect(COMPLETION_TOKEN, mode), Completion::Accepted);
            assert_eq!(
                detect("\n  <promise>COMPLETE</promise>  \n\n", mode),
                Completion::Accepted
            );
            assert_eq!(
                detect("\r\n<promise>COMPLETE</promise>\r\n", mode),
                Completion::Accepted
            );
            assert_eq!(
                detect("\t<promise>COMPLETE</promise>\t", mode),
                Completion::Accepted
            );
        }
    }

    #[test]
    fn trailing_token_line() {
        let out = "All tasks are done.\nNothing remains.\n<promise>COMPLETE</promise>\n";
        assert_eq!(detect(out, Trailing), Completion::Accepted);
        assert_eq!(detect(out, Exact), malformed(out));
    }

    #[test]
    fn trailing_token_with_blank_lines_and_crlf_after_it() {
        let out = "Done.\r\n   <promise>COMPLETE</promise>   \r\n\r\n  \r\n";
        assert_eq!(detect(out, Trailing), Completion::Accepted);
        assert!(matches!(detect(out, Exact), Completion::Malformed { .. }));
    }

    #[test]
    fn token_mid_text_is_malformed_in_both_modes() {
        let out = "<promise>COMPLETE</promise>\nActually, one task remains.\n";
        for mode in [Exact, Trailing] {
            assert_eq!(detect(out, mode), malformed(out));
        }
    }

    #[test]
    fn token_with_extra_text_on_its_line_is_malformed() {
        for out in [
            "All done: <promise>COMPLETE</promise>",
            "Summary\n<promise>COMPLETE</promise>.",
            "`<promise>COMPLETE</promise>`",
        ] {
            for mode in [Exact, Trailing] {
                assert_eq!(detect(out, mode), malformed(out), "{mode} {out:?}");
            }
        }
    }

    #[test]
    fn absent_token() {
        for mode in [Exact, Trailing] {
            assert_eq!(detect("", mode), Completion::Absent);
            assert_eq!(detect("\n\n", mode), Completion::Absent);
            assert_eq!(
                detect("Completed X. 3 tasks remain.", mode),
                Completion::Absent
            );
            // Near misses are not the token.
            assert_eq!(
                detect("<promise>complete</promise>", mode),
                Completion::Absent
            );
            assert_eq!(detect("<promise>COMPLETE", mode), Completion::Absent);
        }
        assert!(!Completion::Absent.is_accepted());
        assert!(Completion::Accepted.is_accepted());
    }

    #[test]
    fn snippet_is_first_100_chars_with_newlines_flattened() {
        let out = format!(
            "line one\r\nline two\n{}\n{COMPLETION_TOKEN} trailing",
            "a".repeat(200)
        );
        let Completion::Malformed { snippet } = detect(&out, Trailing) else {
            panic!("expected malformed");
        };
        assert_eq!(snippet.chars().count(), 100);
        assert!(snippet.starts_with("line one line two aaa"), "{snippet}");
        assert!(!snippet.contains('\n') && !snippet.contains('\r'));
    }

    #[test]
    fn snippet_counts_chars_not_bytes() {
        let out = format!("{}\n{COMPLETION_TOKEN} oops", "é☕".repeat(80));
        let Completion::Malformed { snippet } = detect(&out, Exact) else {
            panic!("expected malformed");
        };
        assert_eq!(snippet.chars().count(), 100);
        assert_eq!(snippet, "é☕".repeat(50));
    }

    #[test]
    fn short_output_snippet_is_whole_output() {
        let out = "x\n<promise>COMPLETE</promise> y";
        assert_eq!(
            detect(out, Trailing),
            Completion::Malformed {
                snippet: "x <promise>COMPLETE</promise> y".to_owned()
            }
        );
    }

    #[test]
    fn output_head_is_the_first_200_chars_on_one_line() {
        let out = format!("one\r\ntwo\tthree\n{}", "é".repeat(300));
        let head = output_head(&out);
        assert_eq!(head.chars().count(), 200);
        assert!(head.starts_with("one two three éé"), "{head}");
        assert!(!head.contains(['\n', '\r', '\t']));
        assert_eq!(output_head("short"), "short");
    }
}
