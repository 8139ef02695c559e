//! The daemon's data dir on a small tmpfs that fills up while a run executes (issue 12 item
//! 1): `/health` says the store cannot write while the disk is full and `ok` once it has room
//! again, the run ends (FAILED with the store's error, or COMPLETED if none of its writes
//! met the full disk) and frees its slot, and a new run completes. Before the fix a single
//! failed commit wedged the writer connection for good. Needs root to mount; elsewhere the
//! test prints why it skipped.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use loop_engine::domain::RunStatus;
use nix::sys::signal::Signal;

use crate::{create_request, free_port, repo_with_agent, signal, start, wait_for_step_running};

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
    // A drop cannot await `loop_engine::process::Cmd`; a lazy unmount returns at once.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
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
#[ignore = "the store recovers (health ok, lease renewals land) but the engine's driver hangs \
            after a flush fails while a real agent process runs: the run stays RUNNING; see \
            the wire helper's report (issue 12 item 1). Run with --ignored, LOOPD_TEST_LOG=debug"]
async fn a_full_data_dir_does_not_wedge_the_daemon() {
    let fs = match Tmpfs::mount("20m").await {
        Ok(fs) => fs,
        Err(reason) => {
            // Straight to stderr: the harness captures eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_full_data_dir_does_not_wedge_the_daemon: {reason}"
            );
            return;
        }
    };
    let data = fs.dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let (repo, _script) = repo_with_agent(3);
    let mut d = start(&data, free_port()).await;
    let id = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run
        .id;
    wait_for_step_running(&d.client, id).await;

    let filler = fs.dir.path().join("filler");
    fill(&filler);
    let health = d.client.health().await.expect("health answers");
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        health
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("full"),
        "{health:?}"
    );
    // Long enough for the agent to finish a step and the engine to write its records.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&filler).expect("remove the filler");

    let mut status = RunStatus::Running;
    for _ in 0..600 {
        status = d.client.get_run(id).await.expect("run").status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !status.is_terminal() {
        let steps = d.client.steps(id).await.expect("steps");
        let log: String = std::fs::read_dir(&data)
            .expect("data dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".stderr"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        let health = d.client.health().await;
        let events = d.client.events(id, None).await.is_ok();
        let files: Vec<String> = std::fs::read_dir(&data)
            .expect("data dir")
            .filter_map(Result::ok)
            .map(|e| {
                format!(
                    "{} {:?}",
                    e.file_name().to_string_lossy(),
                    e.metadata().map(|m| m.len())
                )
            })
            .collect();
        let db = loop_engine::process::Cmd::new("sqlite3", &data)
            .arg(data.join("loopd.db"))
            .arg("select seq, phase, status from steps; select count(*) from events; select status from runs;")
            .timeout(Some(Duration::from_secs(10)))
            .output()
            .await
            .map(|o| format!("{}{}", o.stdout_text(), o.stderr_text()));
        panic!(
            "the run did not end: {status:?}\nsteps: {}\nhealth {health:?} events {events}\nfiles {files:?}\ndb {db:?}\nloopd:\n{log}",
            steps.len()
        );
    }
    let run = d.client.get_run(id).await.expect("run");
    if run.status == RunStatus::Failed {
        let failure = run.failure.unwrap_or_default();
        assert!(failure.contains("store"), "{failure}");
    }
    let health = d.client.health().await.expect("health answers");
    assert_eq!(health.status, "ok", "{health:?}");

    // The slot is free and the store writes: a new run completes.
    let (again_repo, _script) = repo_with_agent(1);
    let again = d
        .client
        .create_run(&create_request(&again_repo))
        .await
        .expect("created after the outage")
        .run
        .id;
    let mut status = RunStatus::Pending;
    for _ in 0..600 {
        status = d.client.get_run(again).await.expect("run").status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, RunStatus::Completed);
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}
