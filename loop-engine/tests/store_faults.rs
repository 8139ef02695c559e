//! Store faults: the store fails mid-run (a full disk, a read-only data dir) and comes back.
//! The running run fails with a recorded reason once the store is back, the engine keeps
//! working, and nothing already committed or stored is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use loop_engine::backend::{
    ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, Store, Termination,
};
use loop_engine::domain::{EventKind, ExitReason, RunStatus};
use loop_engine::engine::{CreateRun, Engine, EngineSettings};
use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
use loop_engine::testing::{FaultyStore, GitFixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_fails_the_run_with_a_reason_and_loses_nothing() {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nglobal_log_dir={}\n",
            repo.root().join("global").display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file(
        "specs/planning/widget-plan.md",
        "- [ ] one\n- [ ] two\n- [ ] three\n- [ ] four\n",
    );
    repo.commit_all("spec and plan");
    let memory = Arc::new(MemoryStore::new());
    let store = FaultyStore::new(memory.clone());
    let engine = Engine::builder()
        .store(store.clone())
        .executor(
            SimulatedAgent::new()
                .with_delay(Duration::from_millis(300))
                .with_git_env(repo.env()),
        )
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings::default())
        .build()
        .expect("engine");
    let run = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/widget.md".into(),
            ..CreateRun::default()
        })
        .await
        .expect("created")
        .run;
    let driving = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run_until_idle().await })
    };
    // Let the first task be implemented and committed, then take the store away.
    let mut events = engine.subscribe_events(run.id);
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("events arrive")
            .expect("channel open");
        if ev.kind == EventKind::IterationEnd {
            break;
        }
    }
    let before_outage = memory
        .events_after(run.id, 0, 10_000)
        .await
        .expect("events");
    store.fail();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(store.refused() > 0, "the engine hit the outage");
    store.recover();
    tokio::time::timeout(Duration::from_secs(60), driving)
        .await
        .expect("the engine finishes")
        .expect("task")
        .expect("engine ok");

    let run = engine.get_run(run.id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::Failed));
    let failure = run.failure.clone().unwrap_or_default();
    assert!(failure.contains("store"), "{failure}");
    assert!(failure.contains("no space left on device"), "{failure}");
    // Everything stored before the outage is still there, in order, and the end is recorded.
    let after = memory
        .events_after(run.id, 0, 10_000)
        .await
        .expect("events");
    assert_eq!(&after[..before_outage.len()], &before_outage[..]);
    let seqs: Vec<u64> = after.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    assert_eq!(after.last().map(|e| e.kind), Some(EventKind::RunFailed));
    // The committed work is on the run branch.
    let log = repo.git(["log", "--format=%s", &run.run_branch]);
    assert!(log.contains("Implement: one"), "{log}");

    // The engine keeps working: a new run completes.
    let again = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/widget.md".into(),
            ..CreateRun::default()
        })
        .await
        .expect("created after the outage")
        .run;
    engine.run_until_idle().await.expect("engine ok");
    let again = engine.get_run(again.id).await.expect("run");
    assert!(again.status.is_terminal(), "{:?}", again.status);
    assert_ne!(again.status, RunStatus::Pending);
}

/// An agent that takes the store away as soon as it starts and waits to be stopped; it gives
/// the store back once stopped, so the run's end can be recorded.
struct OutageAgent {
    store: FaultyStore,
    stopped: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Executor for OutageAgent {
    async fn execute(
        &self,
        _req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        self.store.fail();
        let stopped = tokio::time::timeout(Duration::from_secs(20), ctx.cancel.cancelled())
            .await
            .is_ok();
        self.stopped.store(stopped, Ordering::SeqCst);
        self.store.recover();
        Ok(ExecOutcome {
            exit_code: 130,
            termination: Some(Termination::Canceled),
            ..ExecOutcome::default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_while_the_agent_runs_stops_the_agent_and_fails_the_run() {
    let repo = GitFixture::new();
    // The global log mirror stays inside the fixture: no test writes into HOME.
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nglobal_log_dir={}\n",
            repo.root().join("global").display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file("specs/planning/widget-plan.md", "- [ ] one\n");
    repo.commit_all("spec and plan");
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let stopped = Arc::new(AtomicBool::new(false));
    let engine = Engine::builder()
        .store(store.clone())
        .executor(OutageAgent {
            store: store.clone(),
            stopped: stopped.clone(),
        })
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings::default())
        .build()
        .expect("engine");
    let run = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/widget.md".into(),
            ..CreateRun::default()
        })
        .await
        .expect("created")
        .run;
    tokio::time::timeout(Duration::from_secs(60), engine.run_until_idle())
        .await
        .expect("the engine finishes")
        .expect("engine ok");
    // The step's records are flushed while the agent runs: their failure stops the agent
    // instead of letting it work unrecorded.
    assert!(stopped.load(Ordering::SeqCst), "the agent was not stopped");
    let run = engine.get_run(run.id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let failure = run.failure.clone().unwrap_or_default();
    assert!(failure.contains("no space left on device"), "{failure}");
}

/// An agent that takes the store away and dies (panics) while it is away, giving the store
/// back a moment later: a driver task dying of (or during) a store outage.
struct DiesDuringOutage {
    store: FaultyStore,
}

#[async_trait::async_trait]
impl Executor for DiesDuringOutage {
    async fn execute(
        &self,
        _req: ExecRequest,
        _ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        self.store.fail();
        let store = self.store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            store.recover();
        });
        panic!("injected death during a store outage");
    }
}

/// The end of a run whose driver died while the store failed lands once the store is back
/// (issue 12 item 1): the run does not stay RUNNING with its lease and slot for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_dying_while_the_store_fails_ends_its_run_once_the_store_is_back() {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nglobal_log_dir={}\n",
            repo.root().join("global").display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file("specs/planning/widget-plan.md", "- [ ] one\n");
    repo.commit_all("spec and plan");
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let engine = Engine::builder()
        .store(store.clone())
        .executor(DiesDuringOutage {
            store: store.clone(),
        })
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings::default())
        .build()
        .expect("engine");
    let run = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/widget.md".into(),
            ..CreateRun::default()
        })
        .await
        .expect("created")
        .run;
    tokio::time::timeout(Duration::from_secs(60), engine.run_until_idle())
        .await
        .expect("the engine finishes")
        .expect("engine ok");
    assert!(store.refused() > 0, "the driver met the outage");
    let run = engine.get_run(run.id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let failure = run.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("injected death during a store outage"),
        "{failure}"
    );
    assert!(engine.running_runs().is_empty());
}
