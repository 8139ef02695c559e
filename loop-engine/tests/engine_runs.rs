//! Full runs through the engine: every exit reason, reviewer, verification, watchdog,
//! retries, timeouts, cancel, pause/resume, merges, recovery and the concurrency caps.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loop_engine::backend::{ExecOutcome, ExecPurpose, Store};
use loop_engine::domain::{EventKind, ExitReason, RunStatus, StepPhase, StepStatus};
use loop_engine::impls::SimulatedAgent;
use loop_engine::plan;
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

const IMPL: ExecPurpose = ExecPurpose::Implementation;
const REVIEW: ExecPurpose = ExecPurpose::Review;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_completes_without_reviewer_and_is_squash_merged() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    assert_eq!((run.tasks_done, run.tasks_total), (3, 3));
    let counts = plan::counts(&h.worktree_plan(&run));
    assert_eq!(counts.pending, 0);
    // The merge target holds the work in one squashed commit; the user's checkout stays on
    // its branch.
    let target = run.merge_target_branch.clone().expect("merge target");
    assert_eq!(target, "agent/widget");
    assert_eq!(
        h.repo.git(["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "main"
    );
    let subjects = h.repo.log_subjects(&target);
    assert!(subjects[0].starts_with("loop: "), "{subjects:?}");
    assert!(h.repo.file_at(&target, "sim-work/task-004.txt").is_some());
    let kinds = h.kinds(run.id).await;
    for k in [
        EventKind::RunCreated,
        EventKind::RunStarted,
        EventKind::RunStart,
        EventKind::PromptSnapshot,
        EventKind::IterationStart,
        EventKind::IterationEnd,
        EventKind::CompleteDetected,
        EventKind::MergeDone,
        EventKind::RunEnd,
        EventKind::RunCompleted,
    ] {
        assert!(kinds.contains(&k), "missing {k}: {kinds:?}");
    }
    // Sequence numbers are 1..n without gaps.
    let seqs: Vec<u64> = h.events(run.id).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let report = h.report_kinds(&run);
    assert_eq!(report.first().map(String::as_str), Some("RUN_START"));
    assert_eq!(report.last().map(String::as_str), Some("RUN_END"));
    let folder = run.workspace_root.join(format!("logs/loop/run-{}", run.id));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["exit_reason"], "complete_plan");
    assert!(folder.join("iter-01.log").exists());
    assert!(folder.join("iter-01.tail.txt").exists());
    let artifacts = h.store.list_artifacts(run.id).await.unwrap();
    assert!(artifacts.iter().any(|a| a.path.ends_with("summary.json")));
    assert!(
        artifacts.iter().all(|a| a.checksum.len() == 64),
        "every artifact has a sha256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_completes_the_plan() {
    let setup = Setup {
        config: vec![("reviewer", "true".into())],
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
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
    let text = h.worktree_plan(&run);
    let counts = plan::counts(&text);
    assert_eq!((counts.pending, counts.to_review, counts.done), (0, 0, 3));
    let steps = h.steps(run.id).await;
    let reviews = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Review)
        .count();
    assert_eq!(reviews, 3, "one review per task");
    assert!(steps.iter().any(|s| s.label == "1R1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_sends_a_task_back() {
    let setup = Setup {
        tasks: 1,
        config: vec![("reviewer", "true".into())],
        ..Setup::default()
    };
    // The reviewer reopens the task once; then implementation and review go through.
    let send_back = Act::ShellThenAgent(
        "sed -i 's/- \\[x\\] Task number 1/- [ ] Task number 1/' specs/planning/widget-plan.md && \
         git -c user.name=reviewer -c user.email=reviewer@localhost \
         commit -qam 'Review: send back' && exit 0"
            .into(),
    );
    let exec = ScriptedExecutor::new(vec![(IMPL, Act::Agent), (REVIEW, send_back)]).then_agent();
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    let impls = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Implementation)
        .count();
    assert!(
        impls >= 2,
        "the task was implemented again after the send-back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_verification_writes_runner_notes_and_the_fix_completes() {
    let setup = Setup {
        tasks: 2,
        config: vec![("verify_cmds", "test ! -e BROKEN".into())],
        ..Setup::default()
    };
    let notes_seen = Arc::new(std::sync::Mutex::new(String::new()));
    let capture = {
        let notes_seen = notes_seen.clone();
        Act::Custom(Arc::new(move |req| {
            let notes = req
                .prompt
                .split_whitespace()
                .filter_map(|w| w.strip_prefix('@'))
                .find(|p| p.ends_with("runner-notes.txt"))
                .expect("runner notes in the context line");
            *notes_seen.lock().unwrap() = std::fs::read_to_string(notes).unwrap_or_default();
            ExecOutcome {
                output_text: "Read the runner notes. 1 tasks remain.".into(),
                ..ExecOutcome::default()
            }
        }))
    };
    let exec = ScriptedExecutor::new(vec![
        // Implements task 1 but leaves the build broken.
        (IMPL, Act::ShellThenAgent("touch BROKEN".into())),
        // Reads the runner notes.
        (IMPL, capture),
        // Fixes the build, then goes on.
        (IMPL, Act::ShellThenAgent("git rm -q BROKEN".into())),
    ])
    .then_agent();
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let kinds = h.report_kinds(&run);
    assert!(kinds.iter().any(|k| k == "VERIFY_END"));
    let steps = h.steps(run.id).await;
    let verify: Vec<_> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Verification)
        .map(|s| s.status)
        .collect();
    assert_eq!(verify.first(), Some(&StepStatus::Failed));
    assert!(verify.contains(&StepStatus::Succeeded));
    let folder = run.workspace_root.join(format!("logs/loop/run-{}", run.id));
    assert!(folder.join("verify/verify-01-failure.txt").exists());
    let notes_text = notes_seen.lock().unwrap().clone();
    assert!(notes_text.contains("test ! -e BROKEN"), "{notes_text}");
    assert!(notes_text.to_lowercase().contains("fix"), "{notes_text}");
    // Runner notes are cleared after verification passed again.
    let notes = std::fs::read_to_string(folder.join("runner-notes.txt")).unwrap_or_default();
    assert!(notes.trim().is_empty(), "notes cleared: {notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failing_repeatedly_stops_the_run() {
    let setup = Setup {
        tasks: 5,
        config: vec![
            ("verify_cmds", "false".into()),
            ("max_consecutive_verification_failures", "2".into()),
            ("watchdog_max_rewrites", "0".into()),
        ],
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.exit_reason.as_ref().map(ToString::to_string).as_deref(),
        Some("max_consecutive_failures:verification:2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_rewrites_the_prompt_when_nothing_moves() {
    let setup = Setup {
        tasks: 1,
        config: vec![
            ("watchdog_no_progress_steps", "2".into()),
            ("watchdog_max_rewrites", "1".into()),
        ],
        ..Setup::default()
    };
    let idle = || {
        (
            IMPL,
            Act::Reply("Thinking about it. 1 tasks remain.".into()),
        )
    };
    let exec = ScriptedExecutor::new(vec![idle(), idle(), (IMPL, Act::Agent)]);
    let h = Harness::new(setup, exec.clone());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let events = h.events(run.id).await;
    let rewrite = events
        .iter()
        .find(|e| e.kind == EventKind::WatchdogRewrite)
        .expect("a WATCHDOG_REWRITE event");
    assert_eq!(rewrite.payload["signal"], "no_progress");
    let after = rewrite.payload["prompt_after"].as_str().unwrap();
    assert!(after.ends_with("prompt.rewrite.1.txt"));
    let rewritten = std::fs::read_to_string(after).unwrap();
    // The third call got the rewritten prompt, with the attempt incremented.
    let received = exec.received();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].prompt, rewritten);
    let steps = h.steps(run.id).await;
    assert!(steps.iter().any(|s| s.phase == StepPhase::Watchdog));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_completion_is_warned_and_never_completes_alone() {
    let setup = Setup {
        tasks: 1,
        config: vec![("watchdog_max_rewrites", "0".into())],
        ..Setup::default()
    };
    let exec = ScriptedExecutor::new(vec![
        (
            IMPL,
            Act::Reply("All done <promise>COMPLETE</promise> bye".into()),
        ),
        (IMPL, Act::Agent),
    ]);
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed);
    let events = h.events(run.id).await;
    let warn = events
        .iter()
        .find(|e| e.kind == EventKind::WarnMalformedComplete)
        .expect("warning");
    assert!(
        warn.payload["message"]
            .as_str()
            .unwrap()
            .starts_with("output_head=All done <promise>")
    );
    assert_eq!(
        run.iterations_run, 2,
        "the token alone did not complete the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_then_success() {
    let setup = Setup {
        tasks: 1,
        config: vec![("claude_retries", "2".into())],
        ..Setup::default()
    };
    let fail = || {
        (
            IMPL,
            Act::Fail {
                code: 1,
                stderr: "boom".into(),
            },
        )
    };
    let exec = ScriptedExecutor::new(vec![fail(), fail(), (IMPL, Act::Agent)]);
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    let labels: Vec<_> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Implementation)
        .map(|s| (s.label.clone(), s.status))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("1A1".to_owned(), StepStatus::Retrying),
            ("1A2".to_owned(), StepStatus::Retrying),
            ("1A3".to_owned(), StepStatus::Succeeded),
        ]
    );
    let kinds = h.report_kinds(&run);
    assert_eq!(kinds.iter().filter(|k| *k == "CLAUDE_RETRY").count(), 2);
    let folder = run.workspace_root.join(format!("logs/loop/run-{}", run.id));
    assert!(folder.join("iter-01A02.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_fail_the_run_as_claude_failed() {
    let setup = Setup {
        tasks: 1,
        config: vec![("claude_retries", "1".into())],
        ..Setup::default()
    };
    let fail = || {
        (
            IMPL,
            Act::Fail {
                code: 3,
                stderr: "agent exploded".into(),
            },
        )
    };
    let h = Harness::new(setup, ScriptedExecutor::new(vec![fail(), fail()]));
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let failure = run.failure.unwrap_or_default();
    assert!(failure.contains(&run.id.to_string()), "{failure}");
    let kinds = h.kinds(run.id).await;
    assert!(kinds.contains(&EventKind::RunFailed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_api_errors_are_retried_with_backoff() {
    let setup = Setup {
        tasks: 1,
        config: vec![
            ("claude_transient_retries", "2".into()),
            ("claude_transient_backoff_max_sec", "0".into()),
        ],
        ..Setup::default()
    };
    let overloaded = || {
        (
            IMPL,
            Act::Result {
                is_error: true,
                status: Some(529),
                text: "API Error: 529 overloaded_error".into(),
            },
        )
    };
    let h = Harness::new(
        setup,
        ScriptedExecutor::new(vec![overloaded(), overloaded(), (IMPL, Act::Agent)]),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let retries: Vec<_> = h
        .events(run.id)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::ClaudeRetry)
        .collect();
    assert_eq!(retries.len(), 2);
    // The seed's words in report.tsv; what kind of retry, and after how long, in run.log.
    assert_eq!(retries[0].payload["message"], "attempt=1");
    assert_eq!(retries[1].payload["message"], "attempt=2");
    let log = std::fs::read_to_string(
        run.workspace_root
            .join("logs/loop")
            .join(format!("run-{}", run.id))
            .join("run.log"),
    )
    .expect("run.log");
    assert_eq!(log.matches("transient retry after").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_key_fails_at_once_with_a_clear_reason() {
    let setup = Setup {
        tasks: 1,
        config: vec![("claude_retries", "3".into())],
        ..Setup::default()
    };
    let exec = ScriptedExecutor::new(vec![(
        IMPL,
        Act::Result {
            is_error: true,
            status: Some(401),
            text: "Invalid API key".into(),
        },
    )]);
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let failure = run.failure.unwrap_or_default().to_lowercase();
    assert!(failure.contains("api key"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_agent_times_out_with_124_and_the_retry_succeeds() {
    let setup = Setup {
        tasks: 1,
        config: vec![
            ("claude_timeout_sec", "1".into()),
            ("claude_retries", "1".into()),
        ],
        ..Setup::default()
    };
    let h = Harness::new(
        setup,
        ScriptedExecutor::new(vec![(IMPL, Act::Hang), (IMPL, Act::Agent)]),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    assert_eq!(steps[0].exit_code, Some(124));
    assert!(
        h.report_kinds(&run)
            .iter()
            .any(|k| k == "ITERATION_TIMEOUT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_runs_out_as_iterations_exhausted() {
    let setup = Setup {
        tasks: 5,
        config: vec![("iterations", "2".into())],
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::IterationsExhausted));
    assert_eq!(run.tasks_done, 2);
    // Nothing was merged.
    assert!(
        !h.repo
            .git(["branch", "--list", "agent/widget"])
            .contains("agent/widget")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_step_stops_the_agent() {
    let h = Harness::new(
        Setup::default(),
        ScriptedExecutor::new(vec![(IMPL, Act::Hang)]),
    );
    let run = h.create().await;
    let engine = h.engine.clone();
    let driving = tokio::spawn(async move { engine.run_until_idle().await });
    // Wait until the agent step is running.
    let mut rx = h.engine.subscribe_events(run.id);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("events arrive")
            .expect("channel open");
        if ev.kind == EventKind::IterationStart {
            break;
        }
    }
    h.engine.cancel(run.id).await.expect("cancel accepted");
    tokio::time::timeout(Duration::from_secs(20), driving)
        .await
        .expect("run stops promptly")
        .unwrap()
        .unwrap();
    let run = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Canceled);
    assert_eq!(run.exit_reason, Some(ExitReason::Canceled));
    let steps = h.steps(run.id).await;
    assert_eq!(steps.last().map(|s| s.status), Some(StepStatus::Canceled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_at_a_step_boundary_then_resume_finishes() {
    let h = Harness::new(
        Setup {
            tasks: 3,
            ..Setup::default()
        },
        SimulatedAgent::new().with_delay(Duration::from_millis(200)),
    );
    let run = h.create().await;
    let engine = h.engine.clone();
    let driving = tokio::spawn(async move { engine.run_until_idle().await });
    let mut rx = h.engine.subscribe_events(run.id);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if ev.kind == EventKind::IterationStart {
            break;
        }
    }
    h.engine.pause(run.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), driving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let paused = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    assert!(paused.tasks_done < 3, "paused before the end");
    h.engine.resume(run.id).await.unwrap();
    h.drive().await;
    let done = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    assert_eq!(done.tasks_done, 3);
    let kinds = h.kinds(run.id).await;
    assert!(kinds.contains(&EventKind::RunPaused));
    assert!(kinds.contains(&EventKind::RunResumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_strategy_makes_a_merge_commit() {
    let setup = Setup {
        tasks: 2,
        config: vec![("merge_strategy", "merge".into())],
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let parents = h
        .repo
        .git(["rev-list", "--parents", "-n", "1", "agent/widget"]);
    assert_eq!(
        parents.split_whitespace().count(),
        3,
        "a merge commit: {parents}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_conflict_fails_the_run_and_keeps_the_branch() {
    let setup = Setup {
        tasks: 1,
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
    // The target already has a conflicting version of a file the agent writes.
    h.repo.branch("agent/widget");
    h.repo.checkout("agent/widget");
    h.repo.commit_file(
        "sim-work/task-004.txt",
        "something else\n",
        "conflicting work",
    );
    h.repo.checkout("main");
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    let failure = run.failure.clone().unwrap_or_default();
    assert!(failure.contains("merge"), "{failure}");
    assert!(failure.contains(&run.run_branch), "{failure}");
    assert!(
        h.repo
            .git(["branch", "--list", &run.run_branch])
            .contains(&run.run_branch),
        "run branch kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_spec_and_plan_are_seeded_into_the_worktree() {
    let setup = Setup {
        commit_seed: false,
        tasks: 1,
        ..Setup::default()
    };
    let h = Harness::new(setup, SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert!(h.kinds(run.id).await.contains(&EventKind::SeedCommitted));
    let subjects = h.repo.log_subjects(&run.run_branch);
    assert!(subjects.iter().any(|s| s.contains("seed")), "{subjects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_crash_repeats_no_completed_step() {
    let h = Harness::new(
        Setup {
            tasks: 3,
            ..Setup::default()
        },
        SimulatedAgent::new(),
    );
    let run = h.create().await;
    // Simulate a crash mid-run: the run was claimed by this worker, one task done and
    // committed, a step left IN_PROGRESS.
    let claimed = h
        .store
        .claim_next_run(&loop_engine::backend::ClaimRequest {
            worker_id: "test-worker".into(),
            now: loop_engine::domain::now_ms(),
            lease_ms: 60_000,
            order: loop_engine::backend::QueueOrder::Fifo,
            skip_workspaces: vec![],
            skip_runs: vec![],
        })
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(claimed.id, run.id);
    let interrupted = loop_engine::domain::Step {
        id: loop_engine::domain::StepId::new(),
        run_id: run.id,
        seq: 1,
        iteration: 1,
        label: "1".into(),
        phase: StepPhase::Implementation,
        status: StepStatus::InProgress,
        attempt: 1,
        started_at: Some(loop_engine::domain::now_ms()),
        ended_at: None,
        exit_code: None,
        reason: None,
        prompt_path: None,
        output_path: None,
        head_before: None,
        head_after: None,
        agent_pid: None,
        agent_start_time: None,
        usage: None,
        resources: None,
    };
    h.store.insert_step(&interrupted).await.unwrap();
    h.drive().await;
    let run = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert_eq!(steps[0].reason.as_deref(), Some("interrupted"));
    // Each task was committed exactly once on the run branch.
    let subjects = h.repo.log_subjects(&run.run_branch);
    for i in 1..=3 {
        let n = subjects
            .iter()
            .filter(|s| s.as_str() == format!("Implement: Task number {i}"))
            .count();
        assert_eq!(n, 1, "task {i} committed once: {subjects:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_caps_are_honoured_with_many_runs() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let exec = {
        let (active, peak) = (active.clone(), peak.clone());
        CountingAgent {
            inner: SimulatedAgent::new().with_delay(Duration::from_millis(50)),
            active,
            peak,
        }
    };
    let h = Harness::new(
        Setup {
            tasks: 2,
            max_concurrency: 2,
            ..Setup::default()
        },
        exec,
    );
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(h.create().await.id);
    }
    h.drive().await;
    for id in ids {
        let r = h.engine.get_run(id).await.unwrap();
        // Runs of one workspace compete for one merge target; each completes or reports
        // the merge outcome, but none runs beyond the cap.
        assert!(r.status.is_terminal(), "{:?}", r.status);
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) >= 1);
}

struct CountingAgent {
    inner: SimulatedAgent,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl loop_engine::backend::Executor for CountingAgent {
    async fn execute(
        &self,
        req: loop_engine::backend::ExecRequest,
        ctx: loop_engine::backend::ExecContext,
    ) -> Result<ExecOutcome, loop_engine::backend::ExecutorError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let out = self.inner.execute(req, ctx).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

/// A harness whose agent is a real shell script run by the built-in command executor.
fn script_harness(
    script_body: &str,
    extra: Vec<(&'static str, String)>,
) -> (Harness, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp files").keep();
    let script = dir.join("agent.sh");
    std::fs::write(&script, script_body).expect("temp files");
    let mut config = vec![
        ("executor", "command".to_owned()),
        (
            "agent_cmd",
            format!("sh {} {{prompt_file}}", script.display()),
        ),
    ];
    config.extend(extra);
    let h = Harness::without_executor(Setup {
        tasks: 1,
        config,
        ..Setup::default()
    });
    (h, dir)
}

fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead for our purposes: it only waits to be reaped.
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_for_file(path: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(t) = std::fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_timeout_kills_its_whole_tree_with_124() {
    let pidfile = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let body = format!(
        "setsid sleep 300 >/dev/null 2>&1 < /dev/null &\necho $! > {}\necho working\nsleep 300\n",
        pidfile.display()
    );
    let (h, _dir) = script_harness(&body, vec![("claude_timeout_sec", "1".into())]);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let steps = h.steps(run.id).await;
    let agent = steps
        .iter()
        .find(|s| s.phase == StepPhase::Implementation)
        .unwrap();
    assert_eq!(agent.exit_code, Some(124));
    let grandchild: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if !pid_alive(grandchild) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !pid_alive(grandchild),
        "setsid grandchild {grandchild} survived the timeout"
    );
    assert!(
        h.report_kinds(&run)
            .iter()
            .any(|k| k == "ITERATION_TIMEOUT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_cancel_kills_its_whole_tree() {
    let pidfile = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let body = format!(
        "setsid sleep 300 >/dev/null 2>&1 < /dev/null &\necho $! > {}\nsleep 300\n",
        pidfile.display()
    );
    let (h, _dir) = script_harness(&body, vec![]);
    let run = h.create().await;
    let engine = h.engine.clone();
    let driving = tokio::spawn(async move { engine.run_until_idle().await });
    let grandchild: u32 = wait_for_file(&pidfile).await.trim().parse().unwrap();
    assert!(pid_alive(grandchild));
    h.engine.cancel(run.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), driving)
        .await
        .expect("cancel is prompt")
        .unwrap()
        .unwrap();
    assert_eq!(
        h.engine.get_run(run.id).await.unwrap().status,
        RunStatus::Canceled
    );
    for _ in 0..100 {
        if !pid_alive(grandchild) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !pid_alive(grandchild),
        "setsid grandchild {grandchild} survived the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_script_completes_the_plan() {
    // A minimal "agent": tick the first open task with sed and commit.
    let body = "set -e\nplan=specs/planning/widget-plan.md\nsed -i '0,/- \\[ \\]/s//- [x]/' \"$plan\"\ngit add -A\ngit -c user.name=a -c user.email=a@b commit -qm 'agent: tick a task'\nif grep -q -- '- \\[ \\] Task' \"$plan\"; then echo 'Completed a task.'; else echo '<promise>COMPLETE</promise>'; fi\n";
    let (h, _dir) = script_harness(body, vec![]);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    let subjects = h.repo.log_subjects(&run.run_branch);
    assert!(
        subjects.iter().any(|s| s == "agent: tick a task"),
        "{subjects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_git_identity_commits_as_the_engine() {
    // A bare `git commit`, as a real agent does it; git knows no identity here.
    let body = "set -e\nplan=specs/planning/widget-plan.md\nsed -i '0,/- \\[ \\]/s//- [x]/' \"$plan\"\ngit add -A\ngit commit -qm 'agent: tick a task'\necho '<promise>COMPLETE</promise>'\n";
    let dir = tempfile::tempdir().expect("temp files");
    let script = dir.path().join("agent.sh");
    std::fs::write(&script, body).expect("temp files");
    let h = Harness::without_executor(Setup {
        tasks: 1,
        config: vec![
            ("executor", "command".to_owned()),
            (
                "agent_cmd",
                format!("sh {} {{prompt_file}}", script.display()),
            ),
        ],
        git_identity: false,
        ..Setup::default()
    });
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let author = h.repo.git([
        "log",
        "-1",
        "--format=%an <%ae> / %cn <%ce>",
        "--grep=agent: tick a task",
        &run.run_branch,
    ]);
    assert_eq!(
        author,
        "agent-loop <agent-loop@localhost> / agent-loop <agent-loop@localhost>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haiku_naming_asks_the_naming_model_and_names_the_branch() {
    let setup = Setup {
        tasks: 1,
        config: vec![
            ("run_naming_mode", "haiku".into()),
            ("run_naming_model", "tiny-model".into()),
        ],
        ..Setup::default()
    };
    let exec = ScriptedExecutor::new(vec![
        (
            ExecPurpose::Naming,
            Act::Reply("\"Brave New Widget\"".into()),
        ),
        (IMPL, Act::Agent),
    ]);
    let h = Harness::new(setup, exec.clone());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.name, "Brave New Widget");
    assert_eq!(run.name_source, loop_engine::domain::NameSource::Haiku);
    assert_eq!(run.run_branch, "run/brave-new-widget");
    let naming = &exec.received()[0];
    assert_eq!(naming.model, "tiny-model");
    // The naming agent never works in the user's checkout.
    assert_ne!(naming.workdir, h.repo.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haiku_naming_falls_back_to_the_spec_slug_and_says_why() {
    let setup = Setup {
        tasks: 1,
        config: vec![("run_naming_mode", "haiku".into())],
        ..Setup::default()
    };
    let exec = ScriptedExecutor::new(vec![
        (
            ExecPurpose::Naming,
            Act::Fail {
                code: 1,
                stderr: "model unavailable".into(),
            },
        ),
        (IMPL, Act::Agent),
    ]);
    let h = Harness::new(setup, exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.name, "widget");
    assert_eq!(run.name_source, loop_engine::domain::NameSource::SpecSlug);
    assert_eq!(run.run_branch, "run/widget");
    let named = h
        .events(run.id)
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::RunNamed)
        .expect("RUN_NAMED");
    assert_eq!(named.payload["name_source"], "spec_slug");
    assert!(named.payload["fallback_reason"].as_str().is_some());
}
