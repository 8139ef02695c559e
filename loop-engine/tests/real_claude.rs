//! End to end with the real Claude Code CLI: the engine runs `claude -p ...` through
//! `ClaudeExecutor`, and the CLI talks to a local scripted model (`scripted-model`) instead of
//! the Anthropic API. The CLI really runs the model's `Bash` tool calls in the run's worktree,
//! so these runs exercise the whole chain: prompt, CLI, tool execution, stream-json parsing,
//! retries, timeouts, verification, review and merge.
//!
//! The CLI is found through `CLAUDE_BIN`, else `claude` on `PATH` (`bin/install-claude`
//! installs the pinned version). Without it the test says so and passes, unless
//! `LOOP_REQUIRE_CLAUDE=1`, where it fails.
//!
//! As root, the executor refuses to start the CLI unless the engine's own environment has
//! `IS_SANDBOX=1` (the engine passes no `IS_SANDBOX` to the agent), and a test may not change
//! its own environment (`unsafe_code` is denied). So, as root without it, the test runs itself
//! again as a child process with `IS_SANDBOX=1` and checks that child's result.

#![expect(
    clippy::print_stderr,
    reason = "the scenarios print their wall times for the test log"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use loop_engine::domain::{EventKind, ExitReason, Run, RunStatus, StepPhase, StepStatus};
use loop_engine::impls::ClaudeExecutor;
use loop_engine::plan;
use loop_engine::process::{self, Cmd};
use scripted_model::{ModelServer, Script, ToolCall, Turn, When};

use crate::support::{Harness, Setup};

const CHILD_ENV: &str = "LOOP_REAL_CLAUDE_CHILD";
const TEST_NAME: &str = "real_claude::real_claude_end_to_end";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_end_to_end() {
    let claude = match scripted_model::cli::claude_for_test() {
        scripted_model::cli::ClaudeForTest::Found(bin) => bin,
        scripted_model::cli::ClaudeForTest::Skip(why) => {
            scripted_model::cli::say_skipped("real_claude_end_to_end", &why);
            return;
        }
        scripted_model::cli::ClaudeForTest::Required(why) => panic!("{why}"),
    };
    let root = process::effective_uid() == Some(0);
    let sandbox_ok = std::env::var("IS_SANDBOX").as_deref() == Ok("1");
    if root && !sandbox_ok && std::env::var_os(CHILD_ENV).is_none() {
        rerun_with_sandbox(&claude).await;
        return;
    }
    eprintln!("real_claude: using {}", claude.display());
    let total = Instant::now();
    timed("a) plan with reviewer", plan_with_reviewer(&claude)).await;
    timed("b) transient 529s", transient_overload(&claude)).await;
    timed("c) 401", api_key_refused(&claude)).await;
    timed("d) stalled model", stalled_model(&claude)).await;
    timed(
        "e) root without IS_SANDBOX=1",
        root_without_sandbox(&claude, root),
    )
    .await;
    timed("f) verification fix", verification_fix(&claude)).await;
    timed("g) postmortem", postmortem(&claude)).await;
    eprintln!("real_claude: all scenarios in {:.1?}", total.elapsed());
}

async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    scenario.await;
    eprintln!("real_claude: {name}: {:.1?}", started.elapsed());
}

/// Runs this test again in a child process whose environment has `IS_SANDBOX=1`.
async fn rerun_with_sandbox(claude: &Path) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Cmd::new(&exe, std::env::temp_dir())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("IS_SANDBOX", "1")
        .env(CHILD_ENV, "1")
        .env("CLAUDE_BIN", claude)
        .timeout(Some(Duration::from_secs(300)))
        .output()
        .await
        .expect("the test binary runs");
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    eprintln!("real_claude: child run (IS_SANDBOX=1):\n{stderr}");
    assert!(out.success(), "child run failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}

/// A shell script that points the CLI at `server`, isolates it from the user's settings and
/// git configuration, and execs it.
fn wrapper(dir: &Path, claude: &Path, server: &ModelServer, is_sandbox: &str) -> String {
    let path = dir.join("claude-wrapper.sh");
    scripted_model::cli::Wrapper {
        claude: claude.to_path_buf(),
        base_url: server.base_url(),
        home: Some(dir.join("home")),
        isolated_git: true,
        exports: vec![("IS_SANDBOX".into(), is_sandbox.into())],
    }
    .write(&path)
    .expect("wrapper script written");
    path.to_string_lossy().into_owned()
}

/// A harness whose engine runs the real CLI against `server`.
fn harness(
    claude: &Path,
    server: &ModelServer,
    dir: &Path,
    is_sandbox: &str,
    config: Vec<(&'static str, String)>,
) -> Harness {
    let mut all = vec![
        ("claude_max_retries", "0".to_owned()),
        ("claude_timeout_sec", "60".to_owned()),
        ("claude_retry_backoff_sec", "0".to_owned()),
        ("model", "opus".to_owned()),
    ];
    all.extend(config);
    let exec = ClaudeExecutor::new(wrapper(dir, claude, server, is_sandbox));
    Harness::new(
        Setup {
            tasks: 3,
            config: all,
            ..Setup::default()
        },
        exec,
    )
}

/// report.tsv rows as (kind, iteration, exit_code, message).
fn report_rows(run: &Run) -> Vec<(String, String, String, String)> {
    let path = run
        .workspace_root
        .join("logs/loop")
        .join(format!("run-{}", run.id))
        .join("report.tsv");
    let text = std::fs::read_to_string(&path).expect("report.tsv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            (get(1), get(2), get(4), get(8))
        })
        .collect()
}

fn has_row(rows: &[(String, String, String, String)], kind: &str) -> bool {
    rows.iter().any(|r| r.0 == kind)
}

/// The implementation steps that succeeded report what the CLI's `result` line said.
async fn assert_usage_recorded(h: &Harness, run: &Run) {
    let steps = h.steps(run.id).await;
    let ok: Vec<_> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Implementation && s.status == StepStatus::Succeeded)
        .collect();
    assert!(!ok.is_empty(), "{steps:?}");
    for step in ok {
        let usage = step.usage.as_ref().expect("usage from the result line");
        // One tool call, one final answer.
        assert_eq!(usage.num_turns, Some(2), "{usage:?}");
        assert!(usage.output_tokens.unwrap_or(0) > 0, "{usage:?}");
        assert!(usage.input_tokens.unwrap_or(0) > 0, "{usage:?}");
        assert!(usage.cost_usd.unwrap_or(0.0) > 0.0, "{usage:?}");
        assert!(!usage.is_error);
    }
}

async fn plan_with_reviewer(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![("reviewer", "true".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert!(
        matches!(
            run.exit_reason,
            Some(ExitReason::CompleteReviewer | ExitReason::CompletePlan)
        ),
        "{:?}",
        run.exit_reason
    );
    let counts = plan::counts(&h.worktree_plan(&run));
    assert_eq!(
        (counts.pending, counts.to_review, counts.done),
        (0, 0, 3),
        "every task implemented and reviewed"
    );
    // The merge target holds the work.
    let target = run.merge_target_branch.clone().expect("merge target");
    assert_eq!(target, "agent/widget");
    for n in 1..=3 {
        let file = format!("scripted-work/task-{n}.md");
        assert!(
            h.repo.file_at(&target, &file).is_some(),
            "{file} on {target}"
        );
    }
    let merged_plan = h
        .repo
        .file_at(&target, "specs/planning/widget-plan.md")
        .expect("plan on the merge target");
    assert!(merged_plan.contains("- [R] Task number 3"), "{merged_plan}");
    // The run branch has one commit per task and one per review.
    let run_log = h.repo.log_subjects(&run.run_branch);
    for subject in ["Task number 1", "Review: accept Task number 3"] {
        assert!(run_log.iter().any(|s| s == subject), "{run_log:?}");
    }
    let steps = h.steps(run.id).await;
    let count = |phase| steps.iter().filter(|s| s.phase == phase).count();
    assert_eq!(count(StepPhase::Implementation), 3, "{steps:?}");
    assert_eq!(count(StepPhase::Review), 3, "{steps:?}");
    let rows = report_rows(&run);
    for kind in ["RUN_START", "ITERATION_START", "ITERATION_END", "RUN_END"] {
        assert!(has_row(&rows, kind), "{kind} in {rows:?}");
    }
    let end = rows.last().expect("report rows");
    assert_eq!(end.0, "RUN_END");
    assert!(end.3.starts_with("reason=complete_"), "{end:?}");
    let kinds = h.kinds(run.id).await;
    for k in [
        EventKind::CompleteDetected,
        EventKind::MergeDone,
        EventKind::RunCompleted,
    ] {
        assert!(kinds.contains(&k), "missing {k}: {kinds:?}");
    }
    assert_usage_recorded(&h, &run).await;
    // Every model request came from the CLI, streamed, with the test key.
    let requests = server.messages_requests();
    assert_eq!(requests.len(), 12, "two requests per step");
    for r in &requests {
        assert!(r.path.starts_with("/v1/messages"), "{}", r.path);
        assert_eq!(r.header("x-api-key"), Some("test"));
        assert!(r.messages().expect("JSON body").stream());
    }
    server.shutdown().await;
}

async fn transient_overload(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let overloaded = || Turn::Error {
        status: 529,
        body: None,
        retry_after: None,
    };
    let server = ModelServer::start(Script::plan_agent().then(overloaded()).then(overloaded()))
        .expect("model server starts");
    // The CLI retries once by itself (an api_retry line), then gives up; the engine retries.
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![
            ("claude_max_retries", "1".into()),
            ("claude_transient_retries", "3".into()),
            ("claude_transient_backoff_max_sec", "1".into()),
        ],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    assert_eq!(server.turns_left(), 0, "both 529s were served");
    let events = h.events(run.id).await;
    let api_retry = events
        .iter()
        .find(|e| e.kind == EventKind::ClaudeApiRetry)
        .expect("the CLI's api_retry line became an event");
    assert_eq!(api_retry.payload["error_status"], 529, "{api_retry:?}");
    assert_eq!(api_retry.payload["attempt"], 1, "{api_retry:?}");
    assert_eq!(api_retry.payload["max_retries"], 1, "{api_retry:?}");
    assert!(api_retry.payload["delay_ms"].as_u64().unwrap_or(0) > 0);
    let rows = report_rows(&run);
    let retries: Vec<_> = rows.iter().filter(|r| r.0 == "CLAUDE_RETRY").collect();
    assert_eq!(retries.len(), 1, "{rows:?}");
    assert!(retries[0].3.contains("transient"), "{retries:?}");
    assert!(retries[0].3.contains("529"), "{retries:?}");
    let steps = h.steps(run.id).await;
    let first = steps
        .iter()
        .find(|s| s.phase == StepPhase::Implementation)
        .expect("an implementation step");
    assert_eq!(first.status, StepStatus::Retrying);
    assert_eq!(first.exit_code, Some(1), "the CLI exits 1 on an API error");
    assert!(first.usage.as_ref().is_some_and(|u| u.is_error));
    assert_usage_recorded(&h, &run).await;
    server.shutdown().await;
}

async fn api_key_refused(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ModelServer::start(Script::always(Turn::Error {
        status: 401,
        body: None,
        retry_after: None,
    }))
    .expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![
            ("claude_retries", "2".into()),
            ("claude_transient_retries", "3".into()),
        ],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let reason = run.failure.clone().unwrap_or_default();
    eprintln!("real_claude: c) failure reason: {reason}");
    assert!(reason.contains("API key was refused"), "{reason}");
    assert!(reason.contains("401"), "{reason}");
    // A refused key is not retried, neither by the CLI nor by the engine.
    assert_eq!(server.messages_requests().len(), 1);
    let rows = report_rows(&run);
    assert!(!has_row(&rows, "CLAUDE_RETRY"), "{rows:?}");
    assert_eq!(rows.last().expect("report rows").3, "reason=claude_failed");
    assert!(h.kinds(run.id).await.contains(&EventKind::RunFailed));
    server.shutdown().await;
}

async fn stalled_model(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ModelServer::start(Script::plan_agent().then(Turn::Stall)).expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![
            ("claude_timeout_sec", "5".into()),
            ("claude_retries", "1".into()),
        ],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    let first = steps
        .iter()
        .find(|s| s.phase == StepPhase::Implementation)
        .expect("an implementation step");
    assert_eq!(first.exit_code, Some(124), "{first:?}");
    assert_eq!(first.status, StepStatus::Retrying);
    assert_eq!(first.label, "1A1");
    assert!(
        steps
            .iter()
            .any(|s| s.label == "1A2" && s.status == StepStatus::Succeeded)
    );
    let rows = report_rows(&run);
    let timeout = rows
        .iter()
        .find(|r| r.0 == "ITERATION_TIMEOUT")
        .expect("ITERATION_TIMEOUT row");
    assert_eq!(timeout.2, "124", "{timeout:?}");
    assert!(has_row(&rows, "CLAUDE_RETRY"), "{rows:?}");
    assert!(h.kinds(run.id).await.contains(&EventKind::IterationTimeout));
    assert_eq!(
        plan::counts(&h.worktree_plan(&run)).pending,
        0,
        "the retry did the work"
    );
    server.shutdown().await;
}

async fn root_without_sandbox(claude: &Path, root: bool) {
    if !root {
        scripted_model::cli::say_skipped(
            "real_claude_end_to_end e)",
            "not running as root, so the CLI has no root refusal to show",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    // The engine's environment says IS_SANDBOX=1 (so its own pre-check passes); the agent's
    // says `yes`, as on a machine that sets it that way.
    let h = harness(
        claude,
        &server,
        dir.path(),
        "yes",
        vec![("claude_retries", "1".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let reason = run.failure.clone().unwrap_or_default();
    eprintln!("real_claude: e) failure reason: {reason}");
    assert!(reason.contains("root"), "{reason}");
    assert!(reason.contains("IS_SANDBOX=1"), "{reason}");
    assert!(
        server.requests().is_empty(),
        "the CLI refused before talking to the model"
    );
    let steps = h.steps(run.id).await;
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.phase == StepPhase::Implementation)
            .count(),
        1,
        "not retried: {steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .find(|s| s.phase == StepPhase::Implementation)
            .and_then(|s| s.exit_code),
        Some(1)
    );
    server.shutdown().await;
}

async fn verification_fix(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    // When the CLI attaches runner notes that report a failed check, fix it.
    let script = Script::plan_agent().rule(
        When::RequestContains("verification failed".into()),
        Turn::FixVerification {
            script: "echo fixed > fixed.txt".into(),
        },
        None,
    );
    let server = ModelServer::start(script).expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![("verify_cmds", "test -f fixed.txt".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(
        answers.iter().filter(|a| *a == "fix_verification").count(),
        1,
        "{answers:?}"
    );
    let fix = server
        .messages_requests()
        .into_iter()
        .find(|r| r.answer == "fix_verification")
        .expect("the fix request")
        .messages()
        .expect("JSON body");
    assert!(
        fix.at_paths()
            .iter()
            .any(|p| p.ends_with("runner-notes.txt")),
        "{:?}",
        fix.at_paths()
    );
    let steps = h.steps(run.id).await;
    let verify: Vec<StepStatus> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Verification)
        .map(|s| s.status)
        .collect();
    assert_eq!(verify.first(), Some(&StepStatus::Failed), "{verify:?}");
    assert_eq!(verify.last(), Some(&StepStatus::Succeeded), "{verify:?}");
    let target = run.merge_target_branch.clone().expect("merge target");
    assert_eq!(
        h.repo.file_at(&target, "fixed.txt").as_deref(),
        Some("fixed\n")
    );
    let run_log = h.repo.log_subjects(&run.run_branch);
    assert!(
        run_log.iter().any(|s| s == "Fix the failing verification"),
        "{run_log:?}"
    );
    let folder = run.workspace_root.join(format!("logs/loop/run-{}", run.id));
    let notes = std::fs::read_to_string(folder.join("runner-notes.txt")).unwrap_or_default();
    assert!(notes.trim().is_empty(), "notes cleared: {notes}");
    let rows = report_rows(&run);
    assert!(has_row(&rows, "VERIFY_END"), "{rows:?}");
    assert_eq!(plan::counts(&h.worktree_plan(&run)).pending, 0);
    server.shutdown().await;
}

/// The postmortem through the real CLI (issue 14 item 4): after the run's end, three calls
/// with read-only tools (`--tools Read,Grep,Glob`: the request offers the model no tool that
/// writes), each answer written beside its prompt; a model that tries to write anyway changes
/// nothing in the worktree.
async fn postmortem(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Script::plan_agent()
        .rule(
            When::PromptContains("Postmortem, part 1 of 3".into()),
            Turn::ToolUse {
                calls: vec![ToolCall::bash("touch postmortem-was-here.txt")],
                then: Some("## Verdict\nMeets the spec.".into()),
            },
            None,
        )
        .rule(
            When::PromptContains("Postmortem, part 2 of 3".into()),
            Turn::Text("## Timeline\nThree iterations, one task each.".into()),
            None,
        )
        .rule(
            When::PromptContains("Postmortem, part 3 of 3".into()),
            Turn::Text("The run did what was asked.\n## Root cause\nnone".into()),
            None,
        );
    let server = ModelServer::start(script).expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        "1",
        vec![("postmortem", "true".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let analysis = run
        .workspace_root
        .join("logs/loop")
        .join(format!("run-{}", run.id))
        .join("analysis");
    let rows = report_rows(&run);
    let end = rows
        .iter()
        .find(|r| r.0 == "POSTMORTEM_END")
        .expect("POSTMORTEM_END row")
        .clone();
    let read = |name: &str| {
        std::fs::read_to_string(analysis.join(name)).unwrap_or_else(|e| {
            let log =
                std::fs::read_to_string(analysis.join("spec-compliance.log")).unwrap_or_default();
            panic!("{name}: {e}; POSTMORTEM_END: {end:?}; spec-compliance.log:\n{log}")
        })
    };
    assert_eq!(read("spec-compliance.md"), "## Verdict\nMeets the spec.");
    assert_eq!(
        read("run-quality.md"),
        "## Timeline\nThree iterations, one task each."
    );
    assert_eq!(
        read("summary.md"),
        "The run did what was asked.\n## Root cause\nnone"
    );
    assert!(read("summary-prompt.txt").contains("spec-compliance.md"));
    assert!(read("git-last-commit.txt").contains("Task number 3"));
    assert!(
        !run.worktree_path.join("postmortem-was-here.txt").exists(),
        "the postmortem agent had no Bash"
    );
    assert!(end.3.starts_with("status=ok files=13"), "{end:?}");
    assert!(end.3.contains("cost_usd="), "{end:?}");
    // The postmortem's requests offered the read-only tools only.
    let requests = server.messages_requests();
    let postmortem_requests: Vec<_> = requests
        .iter()
        .filter_map(|r| r.messages())
        .filter(|m| m.prompt().contains("Postmortem, part"))
        .collect();
    assert_eq!(postmortem_requests.len(), 4, "part 1 takes two requests");
    for m in &postmortem_requests {
        let tools: Vec<String> = m.body()["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        // The CLI may add internal placeholders; no tool that writes or runs anything.
        assert!(tools.iter().any(|t| t == "Read"), "{tools:?}");
        for writer in ["Bash", "Edit", "Write", "MultiEdit", "NotebookEdit"] {
            assert!(
                !tools.iter().any(|t| t == writer),
                "{writer} offered: {tools:?}"
            );
        }
    }
    server.shutdown().await;
}
