//! `kill -9` of loopd while its git lands the merge: the git outlives the daemon and holds
//! the target's ref lock; the next daemon waits for it (found by `LOOP_RUN_ID` and
//! `LOOP_VCS_CHILD` in its environment), and the resumed run completes with the merge done
//! exactly once.

use std::time::Duration;

use loop_engine::domain::RunStatus;
use nix::sys::signal::Signal;

use super::{AGENT, create_request, free_port, signal, start, wait_terminal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_merge_completes_with_the_merge_done_once() {
    let repo = loop_engine::testing::GitFixture::new();
    let script = repo.root().join("agent.sh");
    std::fs::write(&script, AGENT).expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\n",
            script.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file("specs/planning/widget-plan.md", "- [ ] task 1\n");
    repo.commit_all("spec and plan");
    // A slow reference-transaction hook on the merge target: the daemon's `update-ref` holds
    // the ref lock for 4 s, long enough to kill the daemon under it.
    let started = repo.root().join("hook-started");
    let hook = repo.path().join(".git/hooks/reference-transaction");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = prepared ] || exit 0\n\
             if grep -q ' refs/heads/agent/widget$'; then touch {}; sleep 4; fi\nexit 0\n",
            started.display()
        ),
    )
    .expect("hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut d = start(data.path(), port).await;
    let run = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run;
    let mut waited = 0;
    while !started.exists() {
        waited += 1;
        if waited % 20 == 0 {
            let now = d.client.get_run(run.id).await.expect("run");
            assert!(
                !now.status.is_terminal() && waited < 1200,
                "the merge never reached the target's ref: {:?} {:?}",
                now.status,
                now.failure
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&d.child, Signal::SIGKILL);
    let _ = d.child.wait().await;

    let mut d = start(data.path(), port).await;
    let status = wait_terminal(&d.client, run.id).await;
    let got = d.client.get_run(run.id).await.expect("run");
    assert_eq!(status, RunStatus::Completed, "{:?}", got.failure);
    // Exactly one merge of the run on the target.
    let merges = repo.git([
        "log",
        "--format=%H",
        &format!("--grep=Loop-Run-Id: {}", run.id),
        "agent/widget",
    ]);
    assert_eq!(merges.lines().count(), 1, "{merges}");
    assert_eq!(
        repo.file_at("agent/widget", "work.txt").as_deref(),
        Some("task 1\n")
    );
    assert!(
        !repo
            .path()
            .join(".git/refs/heads/agent/widget.lock")
            .exists()
    );
    let events = d.client.events(run.id, None).await;
    let mut events = events.expect("events");
    let mut waited_for_git = false;
    while let Some(ev) = events.next().await.expect("event") {
        if ev.kind == "RECOVERY_CLEANUP"
            && ev.data["payload"]["action"]
                .as_str()
                .is_some_and(|a| a.contains("waited for the git processes"))
        {
            waited_for_git = true;
        }
    }
    assert!(waited_for_git, "recovery waited for the old daemon's git");
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}
