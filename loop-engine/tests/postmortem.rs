//! The postmortem of a finished run (issue 14 item 4, SPEC §12): the git snapshot, the three
//! prompts and answers in `<run folder>/analysis/`, the POSTMORTEM_START/END rows and events,
//! the artifacts; it runs after the merge, never changes the run's outcome, and a failing or
//! hanging one is recorded, not raised. `--prompt-only` runs no agent.

use std::path::PathBuf;
use std::time::Duration;

use loop_engine::backend::ExecPurpose;
use loop_engine::domain::{ArtifactKind, EventKind, ExitReason, Run, RunStatus};
use loop_engine::engine::{PostmortemOptions, PostmortemStatus};
use loop_engine::error::EngineError;
use loop_engine::impls::SimulatedAgent;
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

fn folder(run: &Run) -> PathBuf {
    run.workspace_root
        .join("logs/loop")
        .join(format!("run-{}", run.id))
}

/// report.tsv rows as (kind, message).
fn rows(run: &Run) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(folder(run).join("report.tsv")).expect("report.tsv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_owned(), f[8].to_owned())
        })
        .collect()
}

fn with_postmortem(extra: Vec<(&'static str, String)>) -> Setup {
    let mut config = vec![("postmortem", "true".to_owned())];
    config.extend(extra);
    Setup {
        config,
        ..Setup::default()
    }
}

fn position(rows: &[(String, String)], kind: &str) -> usize {
    rows.iter()
        .position(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no {kind} row in {rows:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_gets_its_postmortem_after_the_merge() {
    let h = Harness::new(with_postmortem(vec![]), SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    let dir = folder(&run).join("analysis");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("analysis/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "git-status.txt",
        "git-last-commit.txt",
        "git-last-commit.patch",
        "git-diff.patch",
        "spec-compliance-prompt.txt",
        "spec-compliance.md",
        "run-quality-prompt.txt",
        "run-quality.md",
        "summary-prompt.txt",
        "summary.md",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    // The snapshot is of the run's worktree: its last commit is the agent's last task.
    assert!(read("git-last-commit.txt").contains("Implement: Task number 3"));
    assert!(read("git-last-commit.patch").contains("+- [x] Task number 3"));
    assert!(read("git-status.txt").starts_with("## "));
    // Each prompt sits beside its answer; the simulated agent read the files they name.
    let spec_prompt = read("spec-compliance-prompt.txt");
    assert!(
        spec_prompt.contains(
            &run.worktree_path
                .join("specs/widget.md")
                .display()
                .to_string()
        )
    );
    let answer = read("spec-compliance.md");
    assert!(answer.starts_with("# Simulated postmortem"), "{answer}");
    assert!(answer.contains("git-last-commit.patch`: "), "{answer}");
    assert!(read("summary.md").contains("spec-compliance.md`: "));
    assert!(read("run-quality-prompt.txt").contains("report.tsv"));
    // Rows: after the merge and the run's end, START with the exit reason, END ok.
    let rows = rows(&run);
    let merge_end = position(&rows, "MERGE_END");
    let run_end = position(&rows, "RUN_END");
    let start = position(&rows, "POSTMORTEM_START");
    let end = position(&rows, "POSTMORTEM_END");
    assert!(
        merge_end < run_end && run_end < start && start < end,
        "{rows:#?}"
    );
    assert!(
        rows[start].1.starts_with("reason=complete_plan"),
        "{rows:#?}"
    );
    assert!(rows[end].1.starts_with("status=ok files="), "{rows:#?}");
    // Events, after RUN_COMPLETED.
    let kinds = h.kinds(run.id).await;
    let completed = kinds.iter().position(|k| *k == EventKind::RunCompleted);
    let pm_start = kinds.iter().position(|k| *k == EventKind::PostmortemStart);
    let pm_end = kinds.iter().position(|k| *k == EventKind::PostmortemEnd);
    assert!(completed < pm_start && pm_start < pm_end, "{kinds:?}");
    // Artifacts recorded (workspace copy and mirror).
    let artifacts = h.engine.artifacts(run.id).await.expect("artifacts");
    let analysis: Vec<_> = artifacts
        .iter()
        .filter(|a| a.kind == ArtifactKind::Analysis)
        .collect();
    assert!(
        analysis.iter().any(|a| a.path == dir.join("summary.md")),
        "{analysis:#?}"
    );
    // The run is exactly as it ended, and its worktree untouched.
    let after = h.engine.get_run(run.id).await.expect("run");
    assert_eq!(after.status, RunStatus::Completed);
    assert_eq!(after.exit_reason, Some(ExitReason::CompletePlan));
    // The listing sees the files and the summary's first lines.
    let listing = h.engine.postmortem_listing(run.id).await.expect("listing");
    assert!(!listing.running);
    assert_eq!(listing.files.len(), names.len());
    assert_eq!(
        listing
            .summary_head
            .as_deref()
            .and_then(|s| s.lines().next()),
        Some("# Simulated postmortem")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_postmortem_is_recorded_and_changes_nothing() {
    let fail = || Act::Fail {
        code: 2,
        stderr: "model unavailable".into(),
    };
    let exec = ScriptedExecutor::new(vec![
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Postmortem, fail()),
        (ExecPurpose::Postmortem, fail()),
        (ExecPurpose::Postmortem, fail()),
    ]);
    let h = Harness::new(with_postmortem(vec![]), exec.clone());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    assert_eq!(exec.remaining(), 0);
    // Each postmortem call had the run's worktree and no way to write (purpose says so).
    let calls: Vec<_> = exec
        .received()
        .into_iter()
        .filter(|r| r.purpose == ExecPurpose::Postmortem)
        .collect();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|r| r.workdir == run.worktree_path));
    assert!(calls.iter().all(|r| r.timeout.is_some()), "always bounded");
    let rows = rows(&run);
    let end = &rows[position(&rows, "POSTMORTEM_END")].1;
    assert!(end.starts_with("status=failed"), "{end}");
    assert!(end.contains("spec-compliance:"), "{end}");
    assert!(position(&rows, "MERGE_END") < position(&rows, "POSTMORTEM_START"));
    let dir = folder(&run).join("analysis");
    assert!(dir.join("git-diff.patch").is_file());
    assert!(dir.join("summary-prompt.txt").is_file());
    assert!(!dir.join("summary.md").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_postmortem_neither_delays_the_end_nor_runs_unbounded() {
    let exec = ScriptedExecutor::new(vec![
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Postmortem, Act::Hang),
        (
            ExecPurpose::Postmortem,
            Act::Reply("# Quality\nfine".into()),
        ),
        (
            ExecPurpose::Postmortem,
            Act::Reply("All good.\n## Root cause\nnone".into()),
        ),
    ]);
    let h = Harness::new(
        with_postmortem(vec![("claude_timeout_sec", "2".into())]),
        exec.clone(),
    );
    let created = h.create().await;
    let engine = h.engine.clone();
    let driver = tokio::spawn(async move { engine.run_until_idle().await });
    let ended = tokio::time::timeout(Duration::from_secs(60), h.engine.wait(created.id))
        .await
        .expect("the run ends")
        .expect("wait");
    assert_eq!(ended.status, RunStatus::Completed);
    // The run is over while its postmortem still waits for the hanging agent (2 s).
    let mut running = false;
    for _ in 0..100 {
        let listing = h
            .engine
            .postmortem_listing(created.id)
            .await
            .expect("listing");
        if listing.running {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the postmortem is under way after the end");
    let again = h
        .engine
        .postmortem(created.id, PostmortemOptions::default())
        .await;
    assert!(
        matches!(again, Err(EngineError::InvalidState { .. })),
        "one postmortem at a time: {again:?}"
    );
    tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .expect("the postmortem ends within its timeout")
        .expect("task")
        .expect("engine");
    let run = h.engine.get_run(created.id).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    let rows = rows(&run);
    let end = &rows[position(&rows, "POSTMORTEM_END")].1;
    assert!(end.starts_with("status=failed"), "{end}");
    let dir = folder(&run).join("analysis");
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.md")).expect("summary.md"),
        "All good.\n## Root cause\nnone"
    );
    let listing = h
        .engine
        .postmortem_listing(created.id)
        .await
        .expect("listing");
    assert_eq!(
        listing.summary_head.as_deref(),
        Some("All good.\n## Root cause\nnone")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_only_writes_the_prompts_and_runs_no_agent() {
    // No postmortem at the end (postmortem=false): only the one asked for by hand, which
    // must call no agent (the script has no entry for one).
    let exec = ScriptedExecutor::new(vec![
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
        (ExecPurpose::Implementation, Act::Agent),
    ]);
    let h = Harness::new(Setup::default(), exec.clone());
    let run = h.run_one().await;
    assert!(!folder(&run).join("analysis").exists(), "postmortem=false");
    let report = h
        .engine
        .postmortem(
            run.id,
            PostmortemOptions {
                model: Some("sonnet".into()),
                prompt_only: true,
            },
        )
        .await
        .expect("postmortem");
    assert_eq!(report.status, PostmortemStatus::Ok, "{report:?}");
    let names: Vec<&str> = report.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "git-diff.patch",
            "git-last-commit.patch",
            "git-last-commit.txt",
            "git-status.txt",
            "run-quality-prompt.txt",
            "spec-compliance-prompt.txt",
            "summary-prompt.txt",
        ]
    );
    assert!(exec.unexpected().is_empty(), "{:?}", exec.unexpected());
    // A postmortem removes the answers of an earlier one: after a prompt-only one, no stale
    // answer reads as its own.
    let dir = folder(&run).join("analysis");
    std::fs::write(dir.join("summary.md"), "stale").expect("write");
    h.engine
        .postmortem(
            run.id,
            PostmortemOptions {
                model: None,
                prompt_only: true,
            },
        )
        .await
        .expect("postmortem");
    assert!(
        !dir.join("summary.md").exists(),
        "a stale answer is removed"
    );
    let rows = rows(&run);
    let start = &rows[position(&rows, "POSTMORTEM_START")].1;
    assert_eq!(start, "reason=complete_plan model=sonnet prompt_only=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_has_not_ended_is_not_analysed() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let run = h.create().await;
    let err = h
        .engine
        .postmortem(run.id, PostmortemOptions::default())
        .await
        .expect_err("a pending run is refused");
    assert!(
        matches!(&err, EngineError::InvalidState { detail, .. } if detail.contains("PENDING")),
        "{err:?}"
    );
    let err = h
        .engine
        .start_postmortem(
            run.id,
            PostmortemOptions {
                model: Some(" ".into()),
                prompt_only: true,
            },
        )
        .await
        .expect_err("an empty model is refused");
    assert!(matches!(err, EngineError::InvalidInput { ref field, .. } if field == "model"));
}
