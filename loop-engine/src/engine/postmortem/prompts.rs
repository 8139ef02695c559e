//! The three postmortem prompts (SPEC §12): `spec-compliance` (the work against the spec and
//! plan), `run-quality` (how the loop went, from its report), `summary` (root cause and
//! actions, from the two reports). Pure text: the facts and paths come in, the prompt goes
//! out. Every prompt tells the agent to read and never write.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the prompts say about the run and where its files are.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Facts {
    pub(super) run_id: String,
    pub(super) name: String,
    /// `COMPLETED`, `FAILED`, ...
    pub(super) status: String,
    /// The exit reason (`complete_plan`, `claude_failed`, ...).
    pub(super) reason: String,
    /// The failure in words, if the run failed.
    pub(super) failure: Option<String>,
    pub(super) iterations: u32,
    pub(super) tasks_done: u32,
    pub(super) tasks_total: u32,
    pub(super) model: String,
    pub(super) run_branch: String,
    pub(super) base_branch: String,
    pub(super) worktree: PathBuf,
    /// The spec and plan as the agent saw them (in the worktree).
    pub(super) spec: PathBuf,
    pub(super) plan: PathBuf,
    /// The run folder and its analysis folder.
    pub(super) run_folder: PathBuf,
    pub(super) analysis: PathBuf,
    /// The iteration whose answer was accepted as complete, if one was.
    pub(super) completed_iteration: Option<String>,
    /// The last agent step's tail and full log, if any step ran.
    pub(super) last_tail: Option<PathBuf>,
    pub(super) last_log: Option<PathBuf>,
}

const READ_ONLY: &str = "This is a read-only review: read files, never change, create or \
delete any, and run no command that writes. Skip a file that does not exist and say so.";

fn header(out: &mut String, title: &str, f: &Facts) {
    let _ = writeln!(out, "{title}\n");
    let _ = writeln!(
        out,
        "Run {} (\"{}\") ended {} with reason `{}` after {} iteration(s); {} of {} plan tasks are done.",
        f.run_id, f.name, f.status, f.reason, f.iterations, f.tasks_done, f.tasks_total
    );
    if let Some(why) = &f.failure {
        let _ = writeln!(out, "Why it failed: {why}");
    }
    let _ = writeln!(
        out,
        "The agent ({}) worked on branch `{}` (from `{}`) in the worktree {}.\n",
        f.model,
        f.run_branch,
        f.base_branch,
        f.worktree.display()
    );
}

fn file(out: &mut String, what: &str, path: &Path) {
    let _ = writeln!(out, "- {what}: {}", path.display());
}

/// Does the work meet the spec and the plan?
pub(super) fn spec_compliance(f: &Facts) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Postmortem, part 1 of 3: does the implementation of this agent-loop run meet its spec and plan?",
        f,
    );
    out.push_str("Read these files:\n");
    file(&mut out, "the spec", &f.spec);
    file(&mut out, "the plan, as the agent left it", &f.plan);
    file(
        &mut out,
        "the worktree's status",
        &f.analysis.join("git-status.txt"),
    );
    file(
        &mut out,
        "the last commit",
        &f.analysis.join("git-last-commit.txt"),
    );
    file(
        &mut out,
        "its patch",
        &f.analysis.join("git-last-commit.patch"),
    );
    file(
        &mut out,
        "uncommitted changes",
        &f.analysis.join("git-diff.patch"),
    );
    file(
        &mut out,
        "the run's summary",
        &f.run_folder.join("summary.json"),
    );
    let _ = writeln!(
        out,
        "The source files themselves are in {}; read what you need to judge the work.\n{READ_ONLY}\n",
        f.worktree.display()
    );
    out.push_str(
        "Answer in Markdown with these sections:\n\
         ## Verdict\nMeets the spec, partly, or not: say which and why in two or three sentences.\n\
         ## Requirements\nEach requirement of the spec: met, partly met or missing, with the file or commit that shows it.\n\
         ## Deviations\nWhere the work departs from the spec, and for each whether the spec was unclear (a spec gap) or the agent did not follow it (an implementation deviation).\n\
         ## Verification gaps\nChecks the spec or the plan asks for that were not run, or that would fail.\n\
         ## Still to do\nThe concrete changes that would make the work meet the spec, as a checklist.\n\
         ## Spec and plan edits\nWhat to write differently so that the next run does not repeat a deviation.\n",
    );
    out
}

/// How did the loop itself go?
pub(super) fn run_quality(f: &Facts) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Postmortem, part 2 of 3: how did this agent-loop run go, and what should change in its prompt, spec and tooling?",
        f,
    );
    match &f.completed_iteration {
        Some(it) => {
            let _ = writeln!(
                out,
                "The completion token was accepted at iteration {it}.\n"
            );
        }
        None => out.push_str("No completion token was accepted.\n\n"),
    }
    out.push_str("Read these files:\n");
    file(
        &mut out,
        "the run's report (TSV: timestamp_ms, kind, iteration, duration_ms, exit_code, output_bytes, output_lines, output_path, message; one row per event)",
        &f.run_folder.join("report.tsv"),
    );
    file(&mut out, "the run log", &f.run_folder.join("run.log"));
    file(
        &mut out,
        "the prompt the agent got",
        &f.run_folder.join("prompt.txt"),
    );
    file(
        &mut out,
        "the run's summary",
        &f.run_folder.join("summary.json"),
    );
    file(
        &mut out,
        "notes the loop passed to the agent (failed checks)",
        &f.run_folder.join("runner-notes.txt"),
    );
    if let Some(tail) = &f.last_tail {
        file(&mut out, "the end of the last agent step's output", tail);
    }
    if let Some(log) = &f.last_log {
        file(&mut out, "the last agent step's whole output", log);
    }
    let _ = writeln!(out, "{READ_ONLY}\n");
    out.push_str(
        "Answer in Markdown with these sections:\n\
         ## Timeline\nThe run's course in at most ten lines (iterations, reviews, verification, retries, timeouts, the merge), with anything unusual.\n\
         ## Completion protocol\nDid the agent finish cleanly: one task and one commit per iteration, the plan ticked as it went, `<promise>COMPLETE</promise>` only once nothing was left? Name every WARN_* row and what caused it.\n\
         ## Time and effort\nWhere the time went: the slow, retried or failed steps and why.\n\
         ## Prompt improvements\nConcrete edits to the loop's prompt.\n\
         ## Spec and plan improvements\nConcrete edits to the spec or the plan.\n\
         ## Tooling\nWhat the loop, its logs or its configuration should do differently.\n",
    );
    out
}

/// Root cause and actions, from the two reports.
pub(super) fn summary(f: &Facts) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Postmortem, part 3 of 3: from the two reports below, decide why this agent-loop run turned out as it did and what to do next.",
        f,
    );
    out.push_str("Read these files:\n");
    file(
        &mut out,
        "the spec compliance report",
        &f.analysis.join("spec-compliance.md"),
    );
    file(
        &mut out,
        "the run quality report",
        &f.analysis.join("run-quality.md"),
    );
    let _ = writeln!(
        out,
        "Should a report be missing, say so and use the run's report instead: {}",
        f.run_folder.join("report.tsv").display()
    );
    let _ = writeln!(out, "{READ_ONLY}\n");
    out.push_str(
        "Answer in Markdown. The first line is a one-sentence verdict on the run (it is shown \
         on its own by `loopctl inspect`). Then these sections:\n\
         ## Root cause\nOne of: a spec gap, an implementation deviation, an execution failure (the agent, verification or the infrastructure), or none (the run did what was asked); with the evidence (files, commits, report rows).\n\
         ## Actions\nNumbered, most important first: what to change in the code, the spec, the plan, the prompt or the configuration.\n\
         ## Next step\nMerge, retry, or rewrite the spec first, and why.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            run_id: "r1".into(),
            name: "tidy".into(),
            status: "FAILED".into(),
            reason: "claude_failed".into(),
            failure: Some("the agent exited 1".into()),
            iterations: 3,
            tasks_done: 1,
            tasks_total: 3,
            model: "opus".into(),
            run_branch: "run/tidy".into(),
            base_branch: "main".into(),
            worktree: "/w/repo.run-tidy".into(),
            spec: "/w/repo.run-tidy/specs/widget.md".into(),
            plan: "/w/repo.run-tidy/specs/planning/widget-plan.md".into(),
            run_folder: "/w/repo/logs/loop/run-r1".into(),
            analysis: "/w/repo/logs/loop/run-r1/analysis".into(),
            completed_iteration: None,
            last_tail: Some("/w/repo/logs/loop/run-r1/iter-3.tail.txt".into()),
            last_log: None,
        }
    }

    #[test]
    fn each_prompt_names_its_inputs_and_forbids_writing() {
        let f = facts();
        let spec = spec_compliance(&f);
        assert!(spec.contains("/w/repo.run-tidy/specs/widget.md"));
        assert!(spec.contains("/w/repo/logs/loop/run-r1/analysis/git-diff.patch"));
        assert!(spec.contains("the agent exited 1"));
        let quality = run_quality(&f);
        assert!(quality.contains("/w/repo/logs/loop/run-r1/report.tsv"));
        assert!(quality.contains("iter-3.tail.txt"));
        assert!(quality.contains("No completion token"));
        let sum = summary(&f);
        assert!(sum.contains("analysis/spec-compliance.md"));
        assert!(sum.contains("analysis/run-quality.md"));
        for p in [spec, quality, sum] {
            assert!(p.contains("read-only review"), "{p}");
        }
    }
}
