//! Prompts (SPEC §4): implementation and reviewer prompts, custom prompt files, learnings.
//!
//! These texts are the product's voice to the agent: every rule the loop relies on (one task
//! per iteration, tick only that task, one plain-git commit, the completion token) is stated
//! here, and the engine checks the plan afterwards rather than trusting the answer. Everything
//! is pure string building except [`ensure_learnings`] and [`read_custom_prompt`], the only
//! two functions that touch the filesystem.

use std::path::{Path, PathBuf};

use crate::completion::{COMPLETION_TOKEN, CompletionMode};
use crate::config::resolve_path;

/// The header written into a new learnings file.
pub(crate) const LEARNINGS_HEADER: &str = "\
# Learnings

Shared lessons for agents working in this repository: commands that work, pitfalls met,
conventions agreed. Read this file before starting a task. When you learn something the next
agent should know, add one short bullet under the matching heading (create it if needed).

";

/// The word a custom prompt uses for the spec path.
pub(crate) const SPEC_PATH_WORD: &str = "SPEC_PATH";

/// The word a custom prompt uses for the plan path.
pub(crate) const PLAN_PATH_WORD: &str = "PLAN_PATH";

/// The files a prompt refers to. All of them normally live inside the run's worktree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PromptPaths {
    /// The spec.
    pub(crate) spec: PathBuf,
    /// The plan; `None` when the spec carries the checklist itself.
    pub(crate) plan: Option<PathBuf>,
    /// The runner-notes file (top-priority instructions from the loop, e.g. a failed check).
    pub(crate) runner_notes: PathBuf,
    /// The repo-wide learnings file (`<specs_dir>/LEARNINGS.md`).
    pub(crate) learnings: PathBuf,
    /// Extra files from the `context_files` setting.
    pub(crate) context_files: Vec<PathBuf>,
}

/// A path as the agent should see it: relative to `workdir` when inside it, else absolute
/// (a relative path is taken as already relative to `workdir`).
fn show(path: &Path, workdir: &Path) -> String {
    let workdir = resolve_path(Path::new("/"), workdir);
    let path = resolve_path(&workdir, path);
    match path.strip_prefix(&workdir) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// The plan as the instructions name it.
fn plan_ref(paths: &PromptPaths, workdir: &Path) -> String {
    match &paths.plan {
        Some(plan) => format!("the plan `{}`", show(plan, workdir)),
        None => format!(
            "the plan (the task checklist in the spec `{}`)",
            show(&paths.spec, workdir)
        ),
    }
}

/// The context line: `@spec @plan @runner-notes @learnings @ctx1 ...`, without duplicates.
pub(crate) fn context_line(paths: &PromptPaths, workdir: &Path) -> String {
    let all = [&paths.spec]
        .into_iter()
        .chain(paths.plan.as_ref())
        .chain([&paths.runner_notes, &paths.learnings])
        .chain(&paths.context_files);
    let mut seen: Vec<String> = Vec::new();
    for path in all {
        let shown = show(path, workdir);
        if !seen.contains(&shown) {
            seen.push(shown);
        }
    }
    seen.iter()
        .map(|p| format!("@{p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sentence that tells the agent how the loop detects completion in `mode`.
pub(crate) fn completion_sentence(mode: CompletionMode) -> String {
    match mode {
        CompletionMode::Exact => format!(
            "Completion is detected in exact mode: when the plan is finished, your whole answer \
             must be exactly {COMPLETION_TOKEN} with nothing before or after it; anything else \
             is not read as completion."
        ),
        CompletionMode::Trailing => format!(
            "Completion is detected in trailing mode: when the plan is finished, put \
             {COMPLETION_TOKEN} alone on the last line of your answer; the token anywhere else \
             is not read as completion."
        ),
    }
}

/// The default implementation prompt (SPEC §4).
pub(crate) fn implementation_prompt(
    paths: &PromptPaths,
    workdir: &Path,
    mode: CompletionMode,
) -> String {
    let spec = show(&paths.spec, workdir);
    let plan = plan_ref(paths, workdir);
    let notes = show(&paths.runner_notes, workdir);
    let learnings = show(&paths.learnings, workdir);
    format!(
        "{context}

You are one iteration of an automated coding loop. Each iteration implements exactly ONE task \
of the plan, ticks it and commits it; the loop then starts a fresh iteration for the next task. \
The loop re-reads the plan after you finish and trusts the plan file, not your answer.

## Before you start
1. Read the runner notes `{notes}`. If the file exists and is not empty, it holds \
top-priority instructions from the loop (for example a failing check): do what it says \
before anything else.
2. Read the learnings file `{learnings}` first: it holds lessons from earlier iterations. \
Do not repeat a mistake recorded there.
3. Read the spec `{spec}` and {plan}.

## Your task
4. Choose ONE open task (`- [ ]`) of the highest priority: normally the first open task in \
plan order; pick a later one only when the plan marks it as more urgent or the first one \
depends on unfinished work. Retry a blocked task \
(`- [~]`) only when no `- [ ]` task is left. Manual items (`- [ ]?`) are for humans: never \
work them, never tick them.
5. Implement only that task, completely. Do not start, prepare or tick any other task: one \
task per iteration.
6. Match the schemas, contracts, names and formats in the spec exactly. No placeholders, no \
stubs, no TODOs, no invented values; do not guess. If the spec is silent, follow the \
conventions of the existing code.
7. Run the verification that applies to your change (build, tests, linters the project \
uses) and fix what fails before you tick anything.
8. Tick only that task in the plan: change its `- [ ]` (or `- [~]`) to `- [x]`. Change no \
other marker. If you learned something the next iteration should know (a command that \
works, a trap you fell into), add one short bullet to `{learnings}`.
9. Make exactly one git commit with plain git: stage the files of this change (`git add \
<files>`), then `git commit -m \"<task>\"`. The commit holds the work, the ticked plan and \
any new learning, and its message names the task. If nothing changed, make no commit.

## If you cannot finish the task
10. Mark it blocked: change its marker to `- [~]` and record why (what is missing, what you \
tried) under a `## Blockers Discovered` heading in the plan (create the heading if needed). \
Commit that plan change, then stop.

## Never
- Never touch anything under `reference/`: it is read-only material.
- Never work more than one task in one iteration.
- Never tick a task whose verification fails.

## Your answer
- Answer in one sentence: \"Completed X. N tasks remain.\" or \"Blocked X. N tasks \
remain.\", where X is the task and N the number of `- [ ]` and `- [~]` tasks still in the \
plan.
- Only when the plan has no `- [ ]` and no `- [~]` task left (manual `- [ ]?` items do not \
count) answer with the completion token {COMPLETION_TOKEN} instead.

{sentence}
",
        context = context_line(paths, workdir),
        sentence = completion_sentence(mode),
    )
}

/// The reviewer prompt (SPEC §4).
pub(crate) fn reviewer_prompt(paths: &PromptPaths, workdir: &Path, mode: CompletionMode) -> String {
    let spec = show(&paths.spec, workdir);
    let plan = plan_ref(paths, workdir);
    let learnings = show(&paths.learnings, workdir);
    let context = match &paths.plan {
        Some(plan_path) => format!("@{spec} @{}", show(plan_path, workdir)),
        None => format!("@{spec}"),
    };
    format!(
        "{context}

You are a senior reviewer in an automated coding loop. Implementers tick finished tasks \
`- [x]` in the plan; you review them one at a time. The loop re-reads the plan after you \
finish and trusts the plan file, not your answer.

## Review one task
1. Read the spec `{spec}` and {plan}, and the learnings file `{learnings}`.
2. Take the first task marked `- [x]` (or `- [X]`) in plan order.
3. Find and read the commit that implemented it (`git log`, then `git show <commit>`) and the \
code around the change.
4. Judge it against:
   - spec compliance: schemas, contracts, names and behaviour exactly as specified;
   - consistency with the rest of the codebase;
   - quality: readable, tested, no placeholders or dead code;
   - error handling: failures reported, nothing silently ignored;
   - performance: no obvious waste.
5. Then do exactly one of:
   - Accept: change its `- [x]` to `- [R]` and commit that plan change with plain git.
   - Fix: make the fix, add a short learning to `{learnings}` so the mistake is not repeated, \
change the task to `- [R]`, and make one git commit with plain git.
   - Send back: change its `- [x]` to `- [ ]` and add a learning to `{learnings}` that says \
what was wrong and what a correct implementation needs; commit that with plain git.
6. Review only that one task. Do not touch anything under `reference/` and do not work open \
tasks.

## Your answer
- \"Reviewed X. N awaiting review.\" where X is the task and N the number of `- [x]` tasks \
left.
- \"Review complete. Returning to implementation.\" when no `- [x]` task is left but `- [ ]` \
or `- [~]` tasks remain.
- Exactly the completion token {COMPLETION_TOKEN} only when every task of the plan is `- [R]` \
(manual `- [ ]?` items do not count).

{sentence}
",
        sentence = completion_sentence(mode),
    )
}

/// Replaces the whole words `SPEC_PATH` and `PLAN_PATH` in `template` (a word inside a
/// longer identifier such as `MY_SPEC_PATH` is left alone) and appends the completion
/// sentence when the template does not mention the completion token itself. Without a plan
/// file, `PLAN_PATH` becomes the spec path, since the spec then carries the checklist.
pub(crate) fn custom_prompt(
    template: &str,
    paths: &PromptPaths,
    workdir: &Path,
    mode: CompletionMode,
) -> String {
    let spec = show(&paths.spec, workdir);
    let plan = paths
        .plan
        .as_ref()
        .map_or_else(|| spec.clone(), |p| show(p, workdir));
    let text = replace_word(template, SPEC_PATH_WORD, &spec);
    let text = replace_word(&text, PLAN_PATH_WORD, &plan);
    if text.contains(COMPLETION_TOKEN) {
        return text;
    }
    format!("{}\n\n{}\n", text.trim_end(), completion_sentence(mode))
}

/// Reads a custom prompt file (`prompt_file` or `<workspace>/.loop/prompt.txt`).
#[cfg(test)]
pub(crate) fn read_custom_prompt(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Replaces `word` where it stands alone (not inside a longer identifier).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, _) in text.match_indices(word) {
        let end = at + word.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
            continue;
        }
        out.push_str(&text[copied..at]);
        out.push_str(with);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Creates the learnings file with [`LEARNINGS_HEADER`] (and its parent folders) when it is
/// missing. Returns `true` when it was created; an existing file is never touched.
pub(crate) fn ensure_learnings(path: &Path) -> std::io::Result<bool> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    // `create_new` rather than an exists-check: two runs starting at once must not both write.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, LEARNINGS_HEADER.as_bytes())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The runner notes written after a failed verification command: top-priority instructions
/// to fix the failure first, with the command, its exit code, its log and the last lines.
pub(crate) fn runner_notes_for_failure(
    command: &str,
    exit_code: i32,
    log_path: &Path,
    tail: &str,
) -> String {
    let tail = tail.trim_end_matches(['\n', '\r']);
    let fence = fence_for(tail);
    format!(
        "# TOP PRIORITY: verification failed

The loop ran the project's checks after the last step and one of them failed. Before \
anything else:

1. Fix this failure. Do not start a new task and do not tick anything new in the plan.
2. Re-run the failing command, and the other checks, until they all pass.
3. Commit the fix with plain git in one commit.

Command: `{command}`
Exit code: {exit_code}
Full log: {log}

Last lines of the log:
{fence}
{tail}
{fence}
",
        log = log_path.display(),
    )
}

/// A backtick fence longer than any backtick run inside `text`, so the text cannot end it.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Corrective advice per watchdog signal.
fn watchdog_advice(signal: &str) -> &'static str {
    match signal {
        "repeated_task" => {
            "You have worked the same task several times without finishing it. Stop repeating \
             the same approach. Re-read the task and the spec section it cites, check the \
             learnings file, and find out what is actually failing. If the task cannot be \
             finished with what the repository provides, mark it `- [~]`, record why under \
             `## Blockers Discovered`, commit that, and answer \"Blocked X. N tasks remain.\""
        }
        "verification_failed" => {
            "The project's checks have failed repeatedly. Fixing them is your only job in this \
             step: read the runner notes and the failing log, fix the root cause (not the \
             symptom, never by deleting or weakening tests), re-run the checks until they pass, \
             and commit the fix. Do not start or tick any new task."
        }
        "no_progress" => {
            "Several steps have produced no commit and no plan change. This step must end with \
             visible progress: pick ONE open task, make the smallest complete change that \
             finishes it, tick it `- [x]` and commit. If it cannot be done, mark it `- [~]` \
             with the reason under `## Blockers Discovered` and commit that instead. Do not \
             spend the step only reading or planning."
        }
        "malformed_complete" => {
            "Your previous answer contained the completion token in a form the loop does not \
             accept. Answer with the token only when the plan has no `- [ ]` and no `- [~]` \
             task left, and then exactly as the last paragraph of this prompt says. Otherwise \
             do not write the token at all; answer with one sentence such as \"Completed X. N \
             tasks remain.\""
        }
        _ => {
            "The loop has stopped making progress. Re-read the instructions below and follow \
             them exactly: one task, verified, ticked, one commit."
        }
    }
}

/// The prompt after the watchdog's `rewrite_no`-th rewrite: a short, firm corrective
/// section for `signal` (`repeated_task`, `verification_failed`, `no_progress`,
/// `malformed_complete`; anything else gets generic advice), then `base_prompt`. A leading
/// `@` context line of the base prompt stays first, since that is where the agent CLI reads
/// it.
pub(crate) fn watchdog_rewrite(
    base_prompt: &str,
    signal: &str,
    detail: &str,
    rewrite_no: u32,
) -> String {
    let (context, body) = match base_prompt.split_once('\n') {
        Some((first, rest)) if first.starts_with('@') => {
            (Some(first), rest.trim_start_matches(['\n', '\r']))
        }
        None if base_prompt.starts_with('@') => (Some(base_prompt), ""),
        _ => (None, base_prompt),
    };
    let detail = detail.trim();
    let mut out = String::new();
    if let Some(context) = context {
        out.push_str(context.trim_end_matches('\r'));
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "## Watchdog correction {rewrite_no} ({signal})\n\n{}\n",
        watchdog_advice(signal)
    ));
    if !detail.is_empty() {
        out.push_str(&format!("\nWhat the watchdog saw: {detail}\n"));
    }
    out.push_str("\n---\n\n");
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(root: &Path) -> PromptPaths {
        PromptPaths {
            spec: root.join("specs/auth.md"),
            plan: Some(root.join("specs/planning/auth-plan.md")),
            runner_notes: root.join("logs/loop/run-1/runner-notes.txt"),
            learnings: root.join("specs/LEARNINGS.md"),
            context_files: vec![
                root.join("docs/api.md"),
                PathBuf::from("/etc/shared/style.md"),
            ],
        }
    }

    const ROOT: &str = "/work/repo.run-auth";

    #[test]
    fn context_line_order_and_relative_paths() {
        let root = Path::new(ROOT);
        assert_eq!(
            context_line(&paths(root), root),
            "@specs/auth.md @specs/planning/auth-plan.md @logs/loop/run-1/runner-notes.txt \
             @specs/LEARNINGS.md @docs/api.md @/etc/shared/style.md"
        );
    }

    #[test]
    fn context_line_without_plan_and_without_duplicates() {
        let root = Path::new(ROOT);
        let mut p = paths(root);
        p.plan = None;
        p.context_files = vec![root.join("specs/auth.md"), PathBuf::from("notes/x.md")];
        assert_eq!(
            context_line(&p, root),
            "@specs/auth.md @logs/loop/run-1/runner-notes.txt @specs/LEARNINGS.md @notes/x.md"
        );
    }

    #[test]
    fn paths_outside_workdir_are_absolute() {
        let root = Path::new(ROOT);
        let p = paths(root);
        let line = context_line(&p, Path::new("/elsewhere"));
        assert!(line.starts_with(&format!("@{ROOT}/specs/auth.md @{ROOT}/specs/planning")));
        // A sibling folder whose name merely starts with the workdir's is outside it.
        assert_eq!(
            show(Path::new("/work/repo.run-authX/a.md"), root),
            "/work/repo.run-authX/a.md"
        );
        assert_eq!(
            show(Path::new("/work/repo.run-auth/./x/../a.md"), root),
            "a.md"
        );
    }

    #[test]
    fn implementation_prompt_carries_every_instruction() {
        let root = Path::new(ROOT);
        let prompt = implementation_prompt(&paths(root), root, CompletionMode::Trailing);
        assert_eq!(
            prompt.lines().next(),
            Some(context_line(&paths(root), root).as_str())
        );
        for needle in [
            "runner notes `logs/loop/run-1/runner-notes.txt`",
            "learnings file `specs/LEARNINGS.md` first",
            "spec `specs/auth.md`",
            "plan `specs/planning/auth-plan.md`",
            "ONE open task (`- [ ]`) of the highest priority",
            "Implement only that task",
            "Run the verification that applies",
            "Tick only that task",
            "`- [x]`",
            "exactly one git commit with plain git",
            "If nothing\nchanged, make no commit",
            "`- [~]`",
            "## Blockers Discovered",
            "no `- [ ]` and no `- [~]` task left",
            "manual `- [ ]?` items do not\ncount",
            "schemas, contracts",
            "No placeholders",
            "do not guess",
            "\"Completed X. N tasks remain.\"",
            "\"Blocked X. N tasks \nremain.\"",
            "`reference/`",
            "one \ntask per iteration",
            COMPLETION_TOKEN,
        ] {
            let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat(&prompt).contains(&flat(needle)),
                "missing {needle:?} in:\n{prompt}"
            );
        }
        assert!(
            prompt
                .trim_end()
                .ends_with(&completion_sentence(CompletionMode::Trailing))
        );
        assert!(
            !prompt.contains("git-commit-tool") && !prompt.contains("gh "),
            "plain git only"
        );
    }

    #[test]
    fn implementation_prompt_without_plan() {
        let root = Path::new(ROOT);
        let mut p = paths(root);
        p.plan = None;
        let prompt = implementation_prompt(&p, root, CompletionMode::Exact);
        assert!(
            !prompt
                .lines()
                .next()
                .unwrap_or_default()
                .contains("auth-plan")
        );
        assert!(prompt.contains("checklist in the spec `specs/auth.md`"));
        assert!(
            prompt
                .trim_end()
                .ends_with(&completion_sentence(CompletionMode::Exact))
        );
    }

    #[test]
    fn reviewer_prompt_carries_every_instruction() {
        let root = Path::new(ROOT);
        let prompt = reviewer_prompt(&paths(root), root, CompletionMode::Trailing);
        assert_eq!(
            prompt.lines().next(),
            Some("@specs/auth.md @specs/planning/auth-plan.md")
        );
        let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            "senior reviewer",
            "first task marked `- [x]`",
            "commit that implemented it",
            "spec compliance",
            "consistency with the rest of the codebase",
            "quality",
            "error handling",
            "performance",
            "change its `- [x]` to `- [R]`",
            "add a short learning",
            "change its `- [x]` to `- [ ]` and add a learning",
            "\"Reviewed X. N awaiting review.\"",
            "\"Review complete. Returning to implementation.\"",
            "every task of the plan is `- [R]`",
            COMPLETION_TOKEN,
        ] {
            assert!(
                flat(&prompt).contains(&flat(needle)),
                "missing {needle:?} in:\n{prompt}"
            );
        }
        assert!(
            prompt
                .trim_end()
                .ends_with(&completion_sentence(CompletionMode::Trailing))
        );
    }

    #[test]
    fn completion_sentence_differs_per_mode() {
        let exact = completion_sentence(CompletionMode::Exact);
        let trailing = completion_sentence(CompletionMode::Trailing);
        assert_ne!(exact, trailing);
        assert!(exact.contains(COMPLETION_TOKEN) && trailing.contains(COMPLETION_TOKEN));
        assert!(exact.contains("whole answer"));
        assert!(trailing.contains("last line"));
    }

    #[test]
    fn custom_prompt_substitutes_paths_and_appends_sentence() {
        let root = Path::new(ROOT);
        let template = "Read SPEC_PATH and PLAN_PATH.\nKeep MY_SPEC_PATH and SPEC_PATHS as they are.\n(SPEC_PATH)\n";
        let out = custom_prompt(template, &paths(root), root, CompletionMode::Exact);
        assert!(out.starts_with(
            "Read specs/auth.md and specs/planning/auth-plan.md.\nKeep MY_SPEC_PATH and SPEC_PATHS as they are.\n(specs/auth.md)"
        ), "{out}");
        assert!(
            out.trim_end()
                .ends_with(&completion_sentence(CompletionMode::Exact))
        );
    }

    #[test]
    fn custom_prompt_keeps_its_own_token_sentence() {
        let root = Path::new(ROOT);
        let template = format!("Work SPEC_PATH. Say {COMPLETION_TOKEN} when done.");
        let out = custom_prompt(&template, &paths(root), root, CompletionMode::Trailing);
        assert_eq!(
            out,
            format!("Work specs/auth.md. Say {COMPLETION_TOKEN} when done.")
        );
    }

    #[test]
    fn custom_prompt_without_plan_points_plan_path_at_the_spec() {
        let root = Path::new(ROOT);
        let mut p = paths(root);
        p.plan = None;
        let out = custom_prompt("PLAN_PATH", &p, root, CompletionMode::Trailing);
        assert!(out.starts_with("specs/auth.md\n"));
    }

    #[test]
    fn replace_word_boundaries() {
        assert_eq!(
            replace_word("SPEC_PATHSPEC_PATH", "SPEC_PATH", "x"),
            "SPEC_PATHSPEC_PATH"
        );
        assert_eq!(
            replace_word("aSPEC_PATH SPEC_PATH", "SPEC_PATH", "x"),
            "aSPEC_PATH x"
        );
        assert_eq!(
            replace_word("`SPEC_PATH`/SPEC_PATH:", "SPEC_PATH", "x"),
            "`x`/x:"
        );
        assert_eq!(replace_word("", "SPEC_PATH", "x"), "");
    }

    #[test]
    fn learnings_created_once_then_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("specs/deep/LEARNINGS.md");
        assert!(ensure_learnings(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), LEARNINGS_HEADER);
        assert!(LEARNINGS_HEADER.starts_with("# Learnings\n"));
        std::fs::write(&path, "# Learnings\n- my own lesson\n").unwrap();
        assert!(!ensure_learnings(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# Learnings\n- my own lesson\n"
        );
    }

    #[test]
    fn read_custom_prompt_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prompt.txt");
        std::fs::write(&path, "Do SPEC_PATH").unwrap();
        assert_eq!(read_custom_prompt(&path).unwrap(), "Do SPEC_PATH");
        assert!(read_custom_prompt(&dir.path().join("missing.txt")).is_err());
    }

    #[test]
    fn runner_notes_name_everything() {
        let notes = runner_notes_for_failure(
            "cargo test",
            101,
            Path::new("/logs/verify/verify-03-1.log"),
            "error: oops\n```\nfailed\n\n",
        );
        assert!(notes.starts_with("# TOP PRIORITY"));
        for needle in [
            "Fix this failure",
            "do not tick anything new",
            "Re-run the failing command",
            "Commit the fix",
            "Command: `cargo test`",
            "Exit code: 101",
            "Full log: /logs/verify/verify-03-1.log",
        ] {
            assert!(notes.contains(needle), "missing {needle:?}");
        }
        // The tail's own ``` cannot close the block around it.
        assert!(
            notes.contains("````\nerror: oops\n```\nfailed\n````\n"),
            "{notes}"
        );
    }

    #[test]
    fn watchdog_rewrite_prepends_signal_advice() {
        let base = "@spec.md @plan.md\n\nDo the work.\n";
        let out = watchdog_rewrite(base, "repeated_task", "task 'x' worked 3 times", 1);
        assert!(
            out.starts_with("@spec.md @plan.md\n\n## Watchdog correction 1 (repeated_task)"),
            "{out}"
        );
        assert!(out.contains("What the watchdog saw: task 'x' worked 3 times"));
        assert!(out.contains("`- [~]`"));
        assert!(out.ends_with("---\n\nDo the work.\n"));

        let mut seen = Vec::new();
        for signal in [
            "repeated_task",
            "verification_failed",
            "no_progress",
            "malformed_complete",
            "other",
        ] {
            let out = watchdog_rewrite("Plain prompt", signal, "", 2);
            assert!(out.starts_with(&format!("## Watchdog correction 2 ({signal})")));
            assert!(out.ends_with("Plain prompt"));
            assert!(!out.contains("What the watchdog saw"));
            seen.push(watchdog_advice(signal));
        }
        seen.dedup();
        assert_eq!(seen.len(), 5, "each signal has its own advice");
        assert!(watchdog_advice("verification_failed").contains("runner notes"));
        assert!(watchdog_advice("malformed_complete").contains("token"));
    }
}
