//! Agents in their own cgroup (issue 18), through the real daemon: after a `kill -9` of
//! loopd and a restart, an agent's `setsid`'d and double-forked leftovers are gone, with a
//! cgroup per agent and with the process-group fallback (`LOOP_NO_CGROUP=1`); `/health` says
//! which containment is used; limits are refused at run creation where they cannot be
//! applied; a fork loop under `agent_pids_max` fails its step with the limit as the reason.
//!
//! Tests that need cgroups (root, or a delegated cgroup v2 subtree) say why they skip, and
//! fail instead when `LOOP_REQUIRE_CGROUP=1` (CI runs as root and sets it).

use std::path::Path;
use std::time::Duration;

use loop_engine::process::{Containment, NO_CGROUP_ENV};
use loop_engine::testing::GitFixture;
use nix::sys::signal::Signal;

use super::{
    create_request, free_port, signal, start_with_env, wait_for_step_running, wait_terminal,
};

fn cgroups_or_skip(test: &str) -> bool {
    if loop_engine::process::containment() == Containment::Cgroup {
        return true;
    }
    let why = loop_engine::process::fallback_reason().unwrap_or("unknown");
    assert!(
        std::env::var("LOOP_REQUIRE_CGROUP").ok().as_deref() != Some("1"),
        "{test}: LOOP_REQUIRE_CGROUP=1 but no cgroup can be made for agents: {why}"
    );
    scripted_model::cli::say_skipped(
        test,
        &format!("needs a cgroup per agent (root, or a delegated cgroup v2 subtree): {why}"),
    );
    false
}

fn repo(agent: &str, config: &str) -> GitFixture {
    let repo = GitFixture::new();
    let script = repo.root().join("agent.sh");
    std::fs::write(&script, agent).expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\n{config}",
            script.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file("specs/planning/widget-plan.md", "- [ ] task 1\n");
    repo.commit_all("spec and plan");
    repo
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn read_pid(path: &Path) -> u32 {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no pid in {}", path.display());
}

async fn all_die(pids: &[(&str, u32)], within: Duration, data: &Path) {
    let deadline = std::time::Instant::now() + within;
    for (what, pid) in pids {
        while alive(*pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the {what} process {pid} survived the crash and the restart ({}); loopd said:\n{}",
                std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
                std::fs::read_dir(data)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".stderr"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<String>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn kill_9_and_restart_leave_nothing(cgroups: bool) {
    let pids = tempfile::tempdir().expect("pid dir");
    let d = pids.path().display();
    // The first agent leaves a setsid'd sleeper and a double-forked one (re-parented at
    // once), then waits; the crash comes meanwhile.
    let agent = format!(
        "[ -e {d}/agent.pid ] && exec sleep 300\n\
         setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $! > {d}/setsid.pid\n\
         sh -c 'sleep 300 >/dev/null 2>&1 </dev/null & echo $! > {d}/double.pid'\n\
         echo $$ > {d}/agent.pid\n\
         sleep 300\n"
    );
    let repo = repo(&agent, "");
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let env: Vec<(&str, &str)> = if cgroups {
        vec![]
    } else {
        vec![(NO_CGROUP_ENV, "1")]
    };
    let mut daemon = start_with_env(data.path(), port, &env).await;
    let health = daemon.client.health().await.expect("health");
    assert_eq!(
        health.containment,
        if cgroups { "cgroup" } else { "process-group" }
    );
    let id = daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run
        .id;
    let agent = read_pid(&pids.path().join("agent.pid")).await;
    let setsid = read_pid(&pids.path().join("setsid.pid")).await;
    let double = read_pid(&pids.path().join("double.pid")).await;
    // The crash comes once the step (and the agent's pid) is on record.
    wait_for_step_running(&daemon.client, id).await;
    let cgroup = std::fs::read_to_string(format!("/proc/{agent}/cgroup")).unwrap_or_default();
    if cgroups {
        assert!(
            cgroup.contains(&format!("/loop-agents/{id}.")),
            "the agent is not in its own cgroup: {cgroup}"
        );
    }
    signal(&daemon.child, Signal::SIGKILL);
    let _ = daemon.child.wait().await;
    // The agent itself may be gone already: it gets a parent-death signal where setpriv
    // exists (SPEC §14). What it started left its process group and parent, and is not.
    for pid in [setsid, double] {
        assert!(
            alive(pid),
            "{pid} died with the daemon: nothing left to test"
        );
    }

    let mut daemon = start_with_env(data.path(), port, &env).await;
    all_die(
        &[
            ("agent", agent),
            ("setsid'd", setsid),
            ("double-forked", double),
        ],
        Duration::from_secs(30),
        data.path(),
    )
    .await;
    if cgroups {
        // The crashed agent's cgroup was removed by recovery.
        let v2 = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 cgroup line");
        let parent = loop_engine::process::cgroup_parent().expect("cgroups in use");
        let name = Path::new(v2).file_name().expect("a cgroup name");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while parent.join(name).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} was left",
                parent.join(name).display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Refused while the restarted daemon is still taking the run back.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = daemon.client.cancel(id).await {
        assert!(std::time::Instant::now() < deadline, "cancel: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_terminal(&daemon.client, id).await;
    signal(&daemon.child, Signal::SIGTERM);
    daemon.child.wait().await.expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_leave_no_agent_leftovers_with_cgroups() {
    if cgroups_or_skip("kill_9_and_restart_leave_no_agent_leftovers_with_cgroups") {
        kill_9_and_restart_leave_nothing(true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_leave_no_agent_leftovers_with_the_fallback() {
    kill_9_and_restart_leave_nothing(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_refused_where_agents_get_no_cgroup() {
    let repo = repo("echo hi\n", "agent_pids_max=20\n");
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let mut daemon = start_with_env(data.path(), port, &[(NO_CGROUP_ENV, "1")]).await;
    let err = daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("agent_pids_max"), "{text}");
    assert!(text.contains("process group"), "{text}");
    signal(&daemon.child, Signal::SIGTERM);
    daemon.child.wait().await.expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_fails_its_step_with_agent_pids_max_as_the_reason() {
    if !cgroups_or_skip("a_fork_loop_fails_its_step_with_agent_pids_max_as_the_reason") {
        return;
    }
    if !loop_engine::process::controllers().contains(&"pids") {
        eprintln!("skipped: no pids controller for agent cgroups on this host");
        return;
    }
    let repo = repo(
        "while :; do sleep 300 >/dev/null 2>&1 & done\n",
        "agent_pids_max=16\niterations=1\n",
    );
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let mut daemon = start_with_env(data.path(), port, &[]).await;
    let id = daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run
        .id;
    wait_terminal(&daemon.client, id).await;
    let steps = daemon.client.steps(id).await.expect("steps");
    let step = steps
        .iter()
        .find(|s| s.phase == "implementation")
        .expect("an agent step");
    assert_eq!(step.status, "FAILED", "{step:#?}");
    assert!(
        step.reason
            .as_deref()
            .is_some_and(|r| r.contains("agent_pids_max")),
        "{step:#?}"
    );
    let res = step.resources.as_ref().expect("resources recorded");
    assert_eq!(res.limit_hit.as_deref(), Some("agent_pids_max"));
    assert!(res.cpu_usec > 0, "{res:?}");
    signal(&daemon.child, Signal::SIGTERM);
    daemon.child.wait().await.expect("exits");
}
