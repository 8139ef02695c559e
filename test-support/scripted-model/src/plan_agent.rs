//! The plan-following model: the `Bash` commands it asks the CLI to run in the worktree and
//! the final sentence it builds from their output.
//!
//! The commands do what the loop's prompts ask for with plain tools (awk, git): tick the first
//! open task and commit (implementation), accept the first implemented task (review), or run
//! a fix and commit it (verification fix). Each command ends by printing the plan's counts on
//! a `LOOP_MODEL` line, so the final answer can be built from the tool result alone.

/// Which prompt the model is answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The implementation prompt: tick one `- [ ]` task and commit it.
    Implement,
    /// The reviewer prompt: accept one `- [x]` task (`- [R]`) and commit it.
    Review,
    /// A verification fix: run a snippet and commit, tick nothing.
    Fix,
}

/// Marks one task and writes the new plan to `out`; prints the task's text. `mode=impl`
/// takes the first open task (`- [ ]`, not a manual `- [ ]?`), else the first blocked one
/// (`- [~]`); `mode=review` the first implemented one (`- [x]`). Fenced lines never count.
/// Written for POSIX awk (mawk, gawk, busybox).
const MARK_AWK: &str = r#"
{ lines[NR] = $0 }
/^[ \t]*(```|~~~)/ { fence = !fence; next }
fence { next }
mode == "impl" && !hit && $0 ~ /^[ \t]*[-*] \[ \]/ && $0 !~ /^[ \t]*[-*] \[ \]\?/ { hit = NR; next }
mode == "impl" && !alt && $0 ~ /^[ \t]*[-*] \[~\]/ { alt = NR; next }
mode == "review" && !hit && $0 ~ /^[ \t]*[-*] \[[xX]\]/ { hit = NR; next }
END {
  if (!hit) hit = alt
  for (i = 1; i <= NR; i++) {
    line = lines[i]
    if (i == hit) {
      p = match(line, /[-*] \[/)
      task = substr(line, p + 5)
      sub(/^[ \t]+/, "", task)
      line = substr(line, 1, p + 2) to substr(line, p + 4)
    }
    print line > out
  }
  if (hit) print task
}
"#;

/// Prints `LOOP_MODEL pending=N review=M done=K` for the plan on stdin's file argument.
const COUNT_AWK: &str = r#"
/^[ \t]*(```|~~~)/ { fence = !fence; next }
fence { next }
/^[ \t]*[-*] \[ \]\?/ { next }
/^[ \t]*[-*] \[[ ~]\]/ { pending++ }
/^[ \t]*[-*] \[[xX]\]/ { review++ }
/^[ \t]*[-*] \[[rR]\]/ { done++ }
END { printf "LOOP_MODEL pending=%d review=%d done=%d\n", pending, review, done }
"#;

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `Bash` command for `role` on the plan at `plan` (relative to the CLI's working
/// directory, or absolute). `fix` is the snippet a [`Role::Fix`] runs.
pub fn command(role: Role, plan: &str, fix: &str) -> String {
    let plan_q = shell_quote(plan);
    let count = format!("awk {} \"$plan\"", shell_quote(COUNT_AWK));
    let body = match role {
        Role::Implement | Role::Review => {
            let (mode, to) = if role == Role::Implement {
                ("impl", "x")
            } else {
                ("review", "R")
            };
            let record = if role == Role::Implement {
                "mkdir -p scripted-work\n  \
                 n=$(( $(ls scripted-work | wc -l) + 1 ))\n  \
                 printf '# %s\\n\\nImplemented by the scripted model.\\n' \"$task\" > \"scripted-work/task-$n.md\"\n  \
                 msg=\"$task\""
            } else {
                "msg=\"Review: accept $task\""
            };
            format!(
                "tmp=$(mktemp)\n\
                 task=$(awk -v mode={mode} -v to={to} -v out=\"$tmp\" {mark} \"$plan\")\n\
                 if [ -n \"$task\" ]; then\n  \
                 cat \"$tmp\" > \"$plan\"\n  \
                 {record}\n  \
                 git add -A\n  \
                 git commit -q -m \"$msg\"\n  \
                 echo \"LOOP_MODEL task=$task\"\n\
                 fi\n\
                 unlink \"$tmp\"\n",
                mark = shell_quote(MARK_AWK),
            )
        }
        Role::Fix => format!(
            "{fix}\n\
             git add -A\n\
             git commit -q -m 'Fix the failing verification'\n\
             echo 'LOOP_MODEL task=fix'\n"
        ),
    };
    // A subshell, so `set -e` cannot leak into the CLI's shell.
    format!("(\nset -e\nplan={plan_q}\n{body}{count}\n)")
}

/// What a command printed: the task it worked and the plan's counts afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The task's text, when one was marked.
    pub task: Option<String>,
    /// `- [ ]` and `- [~]` tasks left.
    pub pending: Option<u32>,
    /// `- [x]` tasks left.
    pub review: Option<u32>,
}

impl Report {
    /// Reads the `LOOP_MODEL` lines of a tool result.
    pub fn parse(output: &str) -> Self {
        let mut report = Self::default();
        for line in output.lines() {
            let Some(rest) = line.trim().strip_prefix("LOOP_MODEL ") else {
                continue;
            };
            if let Some(task) = rest.strip_prefix("task=") {
                report.task = Some(task.trim().to_owned());
                continue;
            }
            for pair in rest.split_whitespace() {
                match pair.split_once('=') {
                    Some(("pending", n)) => report.pending = n.parse().ok(),
                    Some(("review", n)) => report.review = n.parse().ok(),
                    _ => {}
                }
            }
        }
        report
    }
}

/// The completion token of the loop's prompts.
pub const COMPLETION_TOKEN: &str = "<promise>COMPLETE</promise>";

/// The final answer for `role` after the command printed `output` (`is_error`: it failed).
pub fn final_answer(role: Role, output: &str, is_error: bool) -> String {
    let report = Report::parse(output);
    let (Some(pending), false) = (report.pending, is_error) else {
        let first: String = output.trim().chars().take(300).collect();
        return format!("The command failed, so nothing was completed: {first}");
    };
    let review = report.review.unwrap_or(0);
    match role {
        Role::Implement => match report.task {
            _ if pending == 0 => COMPLETION_TOKEN.to_owned(),
            Some(task) => format!("Completed {task}. {pending} tasks remain."),
            None => format!("Found no open task. {pending} tasks remain."),
        },
        Role::Review => match report.task {
            _ if review == 0 && pending == 0 => COMPLETION_TOKEN.to_owned(),
            _ if review == 0 => "Review complete. Returning to implementation.".to_owned(),
            Some(task) => format!("Reviewed {task}. {review} awaiting review."),
            None => format!("Found nothing to review. {review} awaiting review."),
        },
        Role::Fix => format!("Fixed the failing check. {pending} tasks remain."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn report_parsing() {
        let r = Report::parse(
            "noise\nLOOP_MODEL task=Task number 1\nLOOP_MODEL pending=2 review=1 done=0\n",
        );
        assert_eq!(r.task.as_deref(), Some("Task number 1"));
        assert_eq!((r.pending, r.review), (Some(2), Some(1)));
        assert_eq!(Report::parse("nothing"), Report::default());
    }

    #[test]
    fn implementation_answers() {
        let out = "LOOP_MODEL task=Task 1\nLOOP_MODEL pending=2 review=1 done=0";
        assert_eq!(
            final_answer(Role::Implement, out, false),
            "Completed Task 1. 2 tasks remain."
        );
        let last = "LOOP_MODEL task=Task 3\nLOOP_MODEL pending=0 review=3 done=0";
        assert_eq!(final_answer(Role::Implement, last, false), COMPLETION_TOKEN);
        assert!(
            final_answer(Role::Implement, "fatal: not a git repository", true)
                .starts_with("The command failed")
        );
        assert!(final_answer(Role::Implement, out, true).starts_with("The command failed"));
    }

    #[test]
    fn review_answers() {
        let more = "LOOP_MODEL task=Task 1\nLOOP_MODEL pending=1 review=1 done=1";
        assert_eq!(
            final_answer(Role::Review, more, false),
            "Reviewed Task 1. 1 awaiting review."
        );
        let back = "LOOP_MODEL task=Task 1\nLOOP_MODEL pending=1 review=0 done=2";
        assert_eq!(
            final_answer(Role::Review, back, false),
            "Review complete. Returning to implementation."
        );
        let all = "LOOP_MODEL task=Task 3\nLOOP_MODEL pending=0 review=0 done=3";
        assert_eq!(final_answer(Role::Review, all, false), COMPLETION_TOKEN);
    }

    #[test]
    fn fix_answer() {
        let out = "LOOP_MODEL task=fix\nLOOP_MODEL pending=2 review=0 done=1";
        assert_eq!(
            final_answer(Role::Fix, out, false),
            "Fixed the failing check. 2 tasks remain."
        );
    }

    #[test]
    fn commands_name_the_plan_and_commit() {
        let c = command(Role::Implement, "specs/planning/w-plan.md", "");
        assert!(c.starts_with("(\nset -e\nplan='specs/planning/w-plan.md'\n"));
        assert!(c.contains("-v mode=impl -v to=x"));
        assert!(c.contains("git commit -q -m \"$msg\""));
        assert!(c.ends_with("\"$plan\"\n)"));
        let r = command(Role::Review, "p-plan.md", "");
        assert!(r.contains("-v mode=review -v to=R"));
        assert!(r.contains("Review: accept"));
        let f = command(Role::Fix, "p-plan.md", "touch fixed.txt");
        assert!(f.contains("touch fixed.txt\ngit add -A\n"));
    }
}
