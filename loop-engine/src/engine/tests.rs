//! Engine-level tests of per-run state: what a finished run leaves behind.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{CreateRun, Engine, EngineSettings};
use crate::impls::{GitCli, MemoryStore, SimulatedAgent};
use crate::testing::GitFixture;

/// A repository with a one-task plan and an engine driving it with the simulated agent.
fn engine_on_fixture() -> (GitFixture, Engine) {
    let repo = GitFixture::new();
    let global = repo.root().join("global-logs");
    repo.write_file(
        ".loop/config",
        &format!(
            "run_naming_mode=spec_slug\nreviewer=false\nglobal_log_dir={}\n",
            global.display()
        ),
    );
    repo.write_file("specs/widget.md", "# Widget\n\nBuild it.\n");
    repo.write_file("specs/planning/widget-plan.md", "# Plan\n\n- [ ] Task 1\n");
    repo.write_file(".gitignore", "logs/\n");
    repo.commit_all("spec and plan");
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(SimulatedAgent::new())
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings {
            worker_id: "test-worker".into(),
            max_concurrency: 3,
            ..EngineSettings::default()
        })
        .build()
        .unwrap();
    (repo, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_leave_no_per_run_state_behind() {
    let (repo, engine) = engine_on_fixture();
    let mut ids = Vec::new();
    for _ in 0..6 {
        let created = engine
            .create_run(CreateRun {
                workspace_root: repo.path().to_path_buf(),
                spec_path: "specs/widget.md".into(),
                ..CreateRun::default()
            })
            .await
            .unwrap();
        ids.push(created.run.id);
    }
    // Someone follows a run while it executes, and leaves before it ends.
    let follower = engine.subscribe_events(ids[0]);
    let output_follower = engine.subscribe_output(ids[1]);
    tokio::time::timeout(Duration::from_secs(120), engine.run_until_idle())
        .await
        .unwrap()
        .unwrap();
    drop((follower, output_follower));
    // Followers of finished runs come and go.
    for id in &ids {
        let run = engine.wait(*id).await.unwrap();
        assert!(run.status.is_terminal(), "{:?}", run.status);
    }
    assert_eq!(
        engine.inner.hub.len(),
        0,
        "channels of finished runs remain"
    );
    assert!(engine.running_runs().is_empty());
    assert!(
        engine.inner.prep_locks.lock().await.is_empty(),
        "preparation locks of idle workspaces remain"
    );
}

#[tokio::test]
async fn prep_locks_in_use_are_kept_and_idle_ones_forgotten() {
    let (_repo, engine) = engine_on_fixture();
    let inner = &engine.inner;
    let (a, b) = (std::path::Path::new("/ws/a"), std::path::Path::new("/ws/b"));
    let held = inner.prep_lock(a).await;
    let guard = held.lock().await;
    drop(inner.prep_lock(b).await);
    // `b` is unused and goes; `a` is held, and a second caller gets the same lock.
    let again = inner.prep_lock(a).await;
    assert!(Arc::ptr_eq(&held, &again));
    assert!(again.try_lock().is_err(), "a is still locked");
    assert_eq!(inner.prep_locks.lock().await.len(), 1);
    drop(guard);
    drop((held, again));
    inner.forget_unused_prep_locks().await;
    assert!(inner.prep_locks.lock().await.is_empty());
}
