//! Template tests: a loop configuration checked with the scripted executor and with mockall.

use std::sync::Arc;

use loop_engine::backend::{
    ExecOutcome, ExecPurpose, MockExecutor, MockNotifier, NotificationKind, Termination,
};
use loop_engine::domain::{ExitReason, RunStatus, StepPhase};
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::{GitCli, MemoryStore};
use loop_engine::testing::{Act, GitFixture, ScriptedExecutor};
use mock_executor::PLAN;

fn repo(config: &str) -> GitFixture {
    let repo = GitFixture::new();
    repo.write_file(".loop/config", config);
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/demo.md", "# Demo\n");
    repo.write_file("specs/planning/demo-plan.md", PLAN);
    repo.commit_all("spec and plan");
    repo
}

fn request(repo: &GitFixture) -> CreateRun {
    CreateRun {
        workspace_root: repo.path().to_path_buf(),
        spec_path: "specs/demo.md".into(),
        ..CreateRun::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_configuration_reviews_every_task() {
    let repo = repo(
        "reviewer=true\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\n",
    );
    // Implement, review, implement, review, ...: the transcript of a healthy run.
    let script = [ExecPurpose::Implementation, ExecPurpose::Review]
        .repeat(3)
        .into_iter()
        .map(|p| (p, Act::Agent));
    let exec = ScriptedExecutor::new(script).with_git_env(repo.env());
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(exec.clone())
        .vcs(GitCli::with_env(repo.env()))
        .build()
        .unwrap();
    let run = engine.create_run(request(&repo)).await.unwrap().run;
    engine.run_until_idle().await.unwrap();
    let run = engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let reviews = engine
        .steps(run.id)
        .await
        .unwrap()
        .iter()
        .filter(|s| s.phase == StepPhase::Review)
        .count();
    assert_eq!(reviews, 3);
    assert_eq!(exec.received().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_agent_is_retried_then_reported_once() {
    let repo = repo(
        "reviewer=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nclaude_retries=2\nclaude_retry_backoff_sec=0\npostmortem=false\n",
    );
    let mut exec = MockExecutor::new();
    // One attempt plus two retries, then the run gives up.
    exec.expect_execute().times(3).returning(|_, _| {
        Ok(ExecOutcome {
            exit_code: 2,
            termination: Some(Termination::Exited),
            stderr_tail: "agent crashed".into(),
            ..ExecOutcome::default()
        })
    });
    let mut notifier = MockNotifier::new();
    notifier
        .expect_notify()
        .withf(|n| n.kind == NotificationKind::RunStarted)
        .times(1)
        .returning(|_| Ok(()));
    notifier
        .expect_notify()
        .withf(|n| n.kind == NotificationKind::RunFailed)
        .times(1)
        .returning(|_| Ok(()));
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor_arc(Arc::new(exec))
        .notifier(notifier)
        .vcs(GitCli::with_env(repo.env()))
        .build()
        .unwrap();
    let run = engine.create_run(request(&repo)).await.unwrap().run;
    engine.run_until_idle().await.unwrap();
    let run = engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
}
