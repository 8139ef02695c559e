//! Driver fixes with a test each: step labels and logs unique for the whole run across pause,
//! resume, cancel and restarts with an exact iteration count (issue 19 item 3); durations too
//! long for the clock end nothing badly (issue 12 item 2); a finished plan goes to final
//! verification whatever the answer looked like (issue 13 item 2).

use std::collections::HashSet;
use std::time::Duration;

use loop_engine::backend::{ExecOutcome, ExecPurpose, Store};
use loop_engine::domain::{EventKind, Run, RunStatus, Step, StepPhase, StepStatus};
use loop_engine::impls::SimulatedAgent;
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

/// The agent steps' labels and log files are all different, and `iterations_run` is the
/// number of iterations that ran a step.
fn assert_unique_and_counted(run: &Run, steps: &[Step]) {
    let agent: Vec<&Step> = steps
        .iter()
        .filter(|s| matches!(s.phase, StepPhase::Implementation | StepPhase::Review))
        .collect();
    let labels: HashSet<&str> = agent.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels.len(),
        agent.len(),
        "every agent step has its own label: {:?}",
        agent.iter().map(|s| &s.label).collect::<Vec<_>>()
    );
    let logs: HashSet<_> = agent.iter().filter_map(|s| s.output_path.clone()).collect();
    assert_eq!(logs.len(), agent.len(), "every agent step has its own log");
    let verify: Vec<&Step> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Verification)
        .collect();
    let verify_labels: HashSet<&str> = verify.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(verify_labels.len(), verify.len(), "verification labels");
    let iterations: HashSet<u32> = steps
        .iter()
        .filter(|s| s.phase != StepPhase::Naming && s.phase != StepPhase::Merge)
        .map(|s| s.iteration)
        .collect();
    assert_eq!(
        run.iterations_run,
        iterations.iter().copied().max().unwrap_or(0),
        "iterations_run is the last iteration begun"
    );
    assert_eq!(
        u32::try_from(iterations.len()).expect("a few iterations"),
        run.iterations_run,
        "every iteration counted once: {iterations:?}"
    );
}

async fn wait_for(h: &Harness, run: &Run, kind: EventKind) {
    let mut rx = h.engine.subscribe_events(run.id);
    if h.kinds(run.id).await.contains(&kind) {
        return;
    }
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the event comes")
            .expect("events flow");
        if ev.kind == kind {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_and_logs_stay_unique_across_pause_and_resume() {
    let h = Harness::new(
        Setup {
            tasks: 3,
            ..Setup::default()
        },
        SimulatedAgent::new().with_delay(Duration::from_millis(300)),
    );
    let run = h.create().await;
    // Two pauses, each during an agent step; then the run finishes.
    for _ in 0..2 {
        let engine = h.engine.clone();
        let driving = tokio::spawn(async move { engine.run_until_idle().await });
        wait_for(&h, &run, EventKind::IterationStart).await;
        h.engine.pause(run.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), driving)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            h.engine.get_run(run.id).await.unwrap().status,
            RunStatus::Paused
        );
        h.engine.resume(run.id).await.unwrap();
    }
    h.drive().await;
    let done = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    let steps = h.steps(run.id).await;
    assert_unique_and_counted(&done, &steps);
    // Each log still holds its own step's output.
    for s in steps
        .iter()
        .filter(|s| s.phase == StepPhase::Implementation)
    {
        let log = std::fs::read_to_string(s.output_path.as_ref().unwrap()).unwrap();
        assert!(!log.is_empty(), "log of step {} kept", s.label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_canceled_keeps_its_labels_and_count() {
    let h = Harness::new(
        Setup {
            tasks: 3,
            ..Setup::default()
        },
        SimulatedAgent::new().with_delay(Duration::from_millis(300)),
    );
    let run = h.create().await;
    // Paused, resumed, paused again during a step, then canceled while paused.
    for round in 0..2 {
        let engine = h.engine.clone();
        let driving = tokio::spawn(async move { engine.run_until_idle().await });
        let seen = h.steps(run.id).await.len();
        loop {
            wait_for(&h, &run, EventKind::IterationStart).await;
            if h.steps(run.id).await.len() > seen {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.engine.pause(run.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), driving)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if round == 0 {
            h.engine.resume(run.id).await.unwrap();
        }
    }
    h.engine.cancel(run.id).await.unwrap();
    let canceled = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_unique_and_counted(&canceled, &h.steps(run.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_iteration_starts_a_new_iteration() {
    let h = Harness::new(
        Setup {
            tasks: 2,
            ..Setup::default()
        },
        SimulatedAgent::new(),
    );
    let run = h.create().await;
    // A daemon died during the first agent step: the run claimed, iteration 1 begun, its
    // step left in progress with its log written.
    let mut claimed = h
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
    claimed.iterations_run = 1;
    h.store.update_run(&claimed).await.unwrap();
    let log = h.repo.root().join("iter-01-of-the-dead-daemon.log");
    std::fs::write(&log, "output of the interrupted step\n").unwrap();
    let interrupted = Step {
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
        output_path: Some(log),
        head_before: None,
        head_after: None,
        agent_pid: None,
        agent_start_time: None,
        usage: None,
        resources: None,
    };
    h.store.insert_step(&interrupted).await.unwrap();
    h.drive().await;
    let done = h.engine.get_run(run.id).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    let steps = h.steps(run.id).await;
    assert_unique_and_counted(&done, &steps);
    assert_eq!(steps[0].reason.as_deref(), Some("interrupted"));
    assert!(
        steps[1..]
            .iter()
            .filter(|s| s.phase == StepPhase::Implementation)
            .all(|s| s.iteration >= 2),
        "the resumed run begins iteration 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_too_long_for_the_clock_does_not_kill_the_driver() {
    let h = Harness::new(
        Setup {
            tasks: 1,
            ..Setup::default()
        },
        SimulatedAgent::new(),
    );
    let mut run = h.create().await;
    // As a run stored by an older daemon would carry it (creation may refuse such a value).
    run.config["heartbeat_sec"] = serde_json::json!(u64::MAX);
    run.config["warn_iteration_sec"] = serde_json::json!(u64::MAX);
    h.store.update_run(&run).await.unwrap();
    h.drive().await;
    let done = h.engine.get_run(run.id).await.unwrap();
    match done.status {
        RunStatus::Completed => {}
        // A daemon that validates stored configurations may refuse it: then by name.
        RunStatus::Failed => assert!(
            done.failure
                .as_deref()
                .unwrap_or("")
                .contains("heartbeat_sec"),
            "{:?}",
            done.failure
        ),
        other => panic!("the run ended {other}: {:?}", done.failure),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_token_on_a_finished_plan_costs_no_extra_agent_call() {
    let setup = Setup {
        tasks: 1,
        config: vec![("merge_strategy", "none".into())],
        ..Setup::default()
    };
    // The agent ticks the last task and answers with a malformed token (the watchdog's
    // `malformed_complete`): the plan is done, so no rewrite and no second call.
    let tick = Act::Custom(std::sync::Arc::new(
        |req: &loop_engine::backend::ExecRequest| {
            let plan = req.workdir.join("specs/planning/widget-plan.md");
            let text = std::fs::read_to_string(&plan).expect("plan in the worktree");
            let ticked = text.replacen("- [ ] Task number 1", "- [x] Task number 1", 1);
            std::fs::write(&plan, ticked).expect("plan written");
            std::fs::write(&req.log_path, "ticked\n").expect("log written");
            ExecOutcome {
                exit_code: 0,
                output_text: "Done: <promise>COMPLETE</promise> or so".into(),
                ..ExecOutcome::default()
            }
        },
    ));
    let exec = ScriptedExecutor::new(vec![(ExecPurpose::Implementation, tick)]);
    let h = Harness::new(setup, exec.clone());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(exec.received().len(), 1, "one agent call");
    assert!(exec.unexpected().is_empty(), "{:?}", exec.unexpected());
    let kinds = h.kinds(run.id).await;
    assert!(kinds.contains(&EventKind::WarnMalformedComplete));
    assert!(!kinds.contains(&EventKind::WatchdogRewrite));
}
