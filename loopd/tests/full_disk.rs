//! The daemon's data dir on a small tmpfs that fills up (issue 12 item 1): `/health` says the
//! store cannot write while the disk is full and `ok` once it has room again, and a run then
//! completes. (The writer connection surviving a failed commit is tested in loop-store's
//! `full_disk` test.) Needs root to mount; elsewhere the test prints why it skipped.

use std::io::Write;
use std::time::Duration;

use loop_engine::domain::RunStatus;
use nix::sys::signal::Signal;

use crate::{create_request, free_port, repo_with_agent, signal, start};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    async fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let out = loop_engine::process::Cmd::new("mount", "/")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .timeout(Some(std::time::Duration::from_secs(30)))
            .output()
            .await
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                out.stderr_text().trim()
            ));
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A drop cannot await; a lazy unmount returns at once.
        let mut umount = loop_engine::process::Cmd::new("umount", "/")
            .arg("-l")
            .arg(self.dir.path())
            .to_tokio();
        let _ = umount.as_std_mut().status();
    }
}

fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_is_reported_and_runs_proceed_after_it() {
    let fs = match Tmpfs::mount("20m").await {
        Ok(fs) => fs,
        Err(reason) => {
            // Straight to stderr: the harness captures eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_full_data_dir_is_reported_and_runs_proceed_after_it: {reason}"
            );
            return;
        }
    };
    let data = fs.dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let mut d = start(&data, free_port()).await;
    assert_eq!(d.client.health().await.expect("health").status, "ok");

    let filler = fs.dir.path().join("filler");
    fill(&filler);
    let health = d.client.health().await.expect("health answers");
    assert_eq!(health.status, "degraded", "{health:?}");
    let problem = health.problem.unwrap_or_default();
    assert!(
        problem.contains("full") && problem.contains(&data.display().to_string()),
        "{problem}"
    );
    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(d.client.health().await.expect("health").status, "ok");

    // The store writes: a run completes.
    let (repo, _script) = repo_with_agent(1);
    let id = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created after the outage")
        .run
        .id;
    let mut status = RunStatus::Pending;
    for _ in 0..600 {
        status = d.client.get_run(id).await.expect("run").status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, RunStatus::Completed);
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}

/// An agent that, while `<root>/slow` exists, starts a child `sleep` and waits for it (the
/// child is re-parented to loopd if the shell dies first); otherwise it does one task.
fn slow_agent(root: &std::path::Path) -> String {
    format!(
        "if [ -e {slow} ]; then sleep 120 & wait $!; exit 0; fi\n{agent}",
        slow = root.join("slow").display(),
        agent = crate::AGENT.trim_start_matches("#!/bin/sh\n")
    )
}

/// Zombie processes whose parent is `pid`, but for `git`: git's automatic maintenance after
/// a commit detaches itself (`setsid`) and so is re-parented to loopd like any orphan; these
/// are left to the separate question of reaping orphans loopd never saw (not this test's).
fn zombie_children(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1) == Some(&pid.to_string().as_str())
            && !stat.contains("(git)")
        {
            found.push(stat[..=close].to_owned());
        }
    }
    found
}

/// The disk fills while an agent (with a child process) runs (issue 12 item 1): the run ends
/// within a bounded time, FAILED naming the store error (or COMPLETED after resuming), its
/// slot is freed, a following run completes, and loopd keeps no zombies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_going_while_the_disk_fills_ends_and_frees_its_slot() {
    let fs = match Tmpfs::mount("20m").await {
        Ok(fs) => fs,
        Err(reason) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_run_going_while_the_disk_fills_ends_and_frees_its_slot: {reason}"
            );
            return;
        }
    };
    let data = fs.dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let mut d = start(&data, free_port()).await;

    let (repo, script) = repo_with_agent(2);
    std::fs::write(&script, slow_agent(repo.root())).expect("agent script");
    std::fs::write(repo.root().join("slow"), "").expect("slow marker");
    // Heartbeats every second: the journal is flushed while the agent runs.
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\nheartbeat_sec=1\nmax_concurrency=1\nglobal_log_dir={}\n",
            script.display(),
            repo.root().join("global").display()
        ),
    );
    repo.commit_all("config");
    let first = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run
        .id;
    crate::wait_for_step_running(&d.client, first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let filler = fs.dir.path().join("filler");
    fill(&filler);
    // Long enough for heartbeat flushes and lease renewals to fail.
    tokio::time::sleep(Duration::from_secs(4)).await;
    std::fs::remove_file(&filler).expect("remove the filler");
    std::fs::remove_file(repo.root().join("slow")).expect("remove the slow marker");

    let mut run = d.client.get_run(first).await.expect("run");
    for _ in 0..600 {
        if run.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        run = d.client.get_run(first).await.expect("run");
    }
    match run.status {
        RunStatus::Failed => {
            let failure = run.failure.clone().unwrap_or_default();
            // The store's own error, not a side effect such as a log line that could not be
            // written.
            assert!(
                failure.contains("store") && failure.contains("full"),
                "{failure}"
            );
        }
        RunStatus::Completed => {}
        other => {
            let log = std::fs::read_dir(&data)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".stderr"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect::<String>();
            panic!("the run did not end after the outage: {other:?}; loopd said:\n{log}")
        }
    }

    // Its slot is free: a following run completes.
    let second = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created after the outage")
        .run
        .id;
    let mut status = RunStatus::Pending;
    for _ in 0..600 {
        status = d.client.get_run(second).await.expect("run").status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, RunStatus::Completed);

    let pid = d.child.id().expect("loopd pid");
    let mut zombies = zombie_children(pid);
    for _ in 0..50 {
        if zombies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        zombies = zombie_children(pid);
    }
    assert!(zombies.is_empty(), "loopd keeps zombies: {zombies:?}");
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}
