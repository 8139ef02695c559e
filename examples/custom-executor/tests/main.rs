//! The template executor drives a shell script that stands in for another agent CLI, through a
//! whole run on a temporary repository.

use custom_executor::ScriptAgent;
use loop_engine::domain::{ExitReason, RunStatus};
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::{GitCli, MemoryStore};
use loop_engine::testing::GitFixture;

const AGENT: &str = r#"#!/bin/sh
# Stand-in agent: tick the first open task, commit, answer like a real agent would.
set -e
plan=specs/planning/demo-plan.md
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
echo "work for $(grep -c -- '- \[x\]' "$plan")" >> work.txt
git add -A
git -c user.name=agent -c user.email=agent@localhost commit -qm "agent: one task"
if grep -q -- '- \[ \]' "$plan"; then echo "Completed a task. more remain."; else echo '<promise>COMPLETE</promise>'; fi
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_agent_completes_a_plan() {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        "reviewer=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\n",
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/demo.md", "# Demo\n");
    repo.write_file("specs/planning/demo-plan.md", "- [ ] one\n- [ ] two\n");
    repo.commit_all("spec and plan");
    let script = repo.root().join("agent.sh");
    std::fs::write(&script, AGENT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The script ignores the prompt file it is given; a real CLI would read it.
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(ScriptAgent::new(&script))
        .vcs(GitCli::with_env(repo.env()))
        .build()
        .unwrap();
    let run = engine
        .create_run(CreateRun {
            workspace_root: repo.path().to_path_buf(),
            spec_path: "specs/demo.md".into(),
            ..CreateRun::default()
        })
        .await
        .unwrap()
        .run;
    engine.run_until_idle().await.unwrap();
    let run = engine.get_run(run.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    assert_eq!(run.tasks_done, 2);
    assert!(
        repo.path().join("work.txt").exists(),
        "the work was merged into the checkout"
    );
}
