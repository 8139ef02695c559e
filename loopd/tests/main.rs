//! The real loopd binary: single instance per data dir, the token file, and runs that survive
//! a SIGTERM and a `kill -9` of the daemon (they resume at the next start and complete, each
//! task committed once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use loop_engine::domain::{RunStatus, StepStatus};
use loop_engine::process::Cmd;
use loop_engine::testing::GitFixture;
use loop_http::Client;
use loop_http::api::CreateRunRequest;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod chaos;
mod containment;
mod full_disk;
mod hosts;
mod merge_crash;
mod notify;
mod real_agents;
mod real_claude;
mod review;
mod secrets;

const TOKEN: &str = "loopd-test-token";

/// A slow agent: ticks the first open task, commits, answers; `sleep` makes each step take
/// long enough to be interrupted.
const AGENT: &str = r#"#!/bin/sh
set -e
sleep "${AGENT_SLEEP:-1}"
plan=specs/planning/widget-plan.md
task=$(grep -m1 -- '- \[ \]' "$plan" | sed 's/- \[ \] //')
[ -n "$task" ] || { echo '<promise>COMPLETE</promise>'; exit 0; }
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
echo "$task" >> work.txt
git add -A
git -c user.name=agent -c user.email=agent@localhost commit -qm "Implement: $task"
if grep -q -- '- \[ \]' "$plan"; then echo "Completed $task."; else echo '<promise>COMPLETE</promise>'; fi
"#;

struct Daemon {
    child: tokio::process::Child,
    client: Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(data: &Path, port: u16) -> Daemon {
    start_with_env(data, port, &[]).await
}

/// [`start`] with extra environment variables for the daemon.
async fn start_with_env(data: &Path, port: u16, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--stop-grace-sec", "5"])
        .env("LOOPD_TOKEN", TOKEN)
        // LOOPD_TEST_LOG=debug keeps the daemon's debug log in `<data>/loopd-<port>.stderr`.
        .env(
            "RUST_LOG",
            std::env::var("LOOPD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let mut cmd = cmd.to_tokio();
    cmd.stdout(std::process::Stdio::null());
    // Keep the daemon's own words: if it does not come up, the test says why.
    let log_path = data.join(format!("loopd-{port}.stderr"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("stderr file");
    cmd.stderr(log);
    let mut child = cmd.spawn().expect("loopd starts");
    let client =
        Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).expect("client");
    if let Err(e) = client.wait_ready(Duration::from_secs(60)).await {
        let status = child.try_wait();
        let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("loopd did not become ready: {e}; process: {status:?}; its stderr:\n{stderr}");
    }
    Daemon { child, client }
}

fn repo_with_agent(tasks: usize) -> (GitFixture, PathBuf) {
    let repo = GitFixture::new();
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
    let plan: String = (1..=tasks).map(|i| format!("- [ ] task {i}\n")).collect();
    repo.write_file("specs/planning/widget-plan.md", &plan);
    repo.commit_all("spec and plan");
    (repo, script)
}

fn create_request(repo: &GitFixture) -> CreateRunRequest {
    CreateRunRequest {
        spec_path: "specs/widget.md".into(),
        plan_path: None,
        workspace_root: repo.path().to_path_buf(),
        config_override: None,
        config_file: None,
        cwd: None,
        name: None,
        name_source: None,
        merge_target_branch: None,
        merge_strategy: None,
    }
}

async fn wait_for_step_running(client: &Client, id: loop_engine::domain::RunId) {
    for _ in 0..200 {
        if let Ok(steps) = client.steps(id).await
            && steps
                .iter()
                .any(|s| s.status == "IN_PROGRESS" && s.phase == "implementation")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no agent step started");
}

async fn wait_terminal(client: &Client, id: loop_engine::domain::RunId) -> RunStatus {
    for _ in 0..600 {
        let run = client.get_run(id).await.expect("run");
        if run.status.is_terminal() {
            return run.status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run did not finish");
}

fn signal(child: &tokio::process::Child, sig: Signal) {
    let pid = child.id().expect("pid");
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), sig).expect("signal sent");
}

/// `LOOPD_LISTEN=127.0.0.2:<port>` serves requests addressed to 127.0.0.2 (issue 12 item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_127_0_0_2_answers_its_own_address() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("LOOPD_LISTEN", format!("127.0.0.2:{port}"))
        .env("LOOPD_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .to_tokio()
        .spawn()
        .expect("loopd starts");
    let client =
        Client::new(&format!("http://127.0.0.2:{port}"), Some(TOKEN.into())).expect("client");
    let health = client
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("health on 127.0.0.2");
    assert_eq!(health.status, "ok");
    client
        .list_runs(&loop_http::api::ListQuery::default())
        .await
        .expect("an authenticated route on 127.0.0.2");
    signal(&child, Signal::SIGTERM);
    child.wait().await.expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_fails_at_once() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut first = start(data.path(), free_port()).await;
    let second = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data.path())
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(data.path())
        // A user-facing error stays a plain line even with backtraces asked for.
        .env("RUST_BACKTRACE", "1")
        .timeout(Some(Duration::from_secs(10)))
        .output()
        .await
        .expect("runs");
    assert_ne!(second.code, 0);
    let stderr = second.stderr_text();
    assert!(
        stderr.contains("loopd: another loopd is already running"),
        "{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace") && !stderr.contains("Error {"),
        "printed plainly: {stderr}"
    );
    signal(&first.child, Signal::SIGTERM);
    let status = first.child.wait().await.expect("exits");
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_is_generated_with_mode_0600_and_required() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data.path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path())
        .env_remove("LOOPD_TOKEN")
        .to_tokio();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("starts");
    let anonymous = Client::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
    anonymous
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("ready");
    let token_path = data.path().join("token");
    let mode = std::fs::metadata(&token_path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = anonymous
        .list_runs(&Default::default())
        .await
        .expect_err("401");
    assert!(
        matches!(err, loop_http::ClientError::Unauthorized { .. }),
        "{err:?}"
    );
    let token = std::fs::read_to_string(&token_path).expect("read");
    let authed = Client::new(&format!("http://127.0.0.1:{port}"), Some(token)).expect("client");
    authed
        .list_runs(&Default::default())
        .await
        .expect("the file's token works");
    signal(&child, Signal::SIGTERM);
    child.wait().await.expect("exits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_sigterm_and_kill_9_of_the_daemon() {
    let (repo, _script) = repo_with_agent(3);
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port();

    let mut d = start(data.path(), port).await;
    let run = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run;
    wait_for_step_running(&d.client, run.id).await;
    // A clean stop mid-step: the agent is stopped, the run goes back to the queue.
    signal(&d.child, Signal::SIGTERM);
    let status = d.child.wait().await.expect("exits");
    assert!(status.success(), "{status:?}");

    let mut d = start(data.path(), port).await;
    wait_for_step_running(&d.client, run.id).await;
    // A crash mid-step: nothing gets to clean up.
    signal(&d.child, Signal::SIGKILL);
    let _ = d.child.wait().await;

    let mut d = start(data.path(), port).await;
    assert_eq!(wait_terminal(&d.client, run.id).await, RunStatus::Completed);
    let steps = d.client.steps(run.id).await.expect("steps");
    let interrupted = steps
        .iter()
        .filter(|s| s.reason.as_deref() == Some("interrupted"))
        .count();
    assert!(
        interrupted >= 2,
        "both interruptions are on record: {steps:#?}"
    );
    assert!(
        steps
            .iter()
            .all(|s| s.status != StepStatus::InProgress.as_str())
    );
    // Every task is committed exactly once on the run branch.
    let log = repo.git(["log", "--format=%s", "run/widget"]);
    for i in 1..=3 {
        let n = log
            .lines()
            .filter(|l| *l == format!("Implement: task {i}"))
            .count();
        assert_eq!(n, 1, "task {i} committed once:\n{log}");
    }
    // Events are gap-free.
    let mut events = d.client.events(run.id, None).await.expect("events");
    let mut expected = 1;
    while let Some(ev) = events.next().await.expect("event") {
        assert_eq!(ev.seq, expected);
        expected += 1;
    }
    signal(&d.child, Signal::SIGTERM);
    d.child.wait().await.expect("exits");
}

/// As root, a daemon whose `IS_SANDBOX` is not exactly `1` warns at start-up, and refuses a
/// Claude run at `POST /runs` (HTTP 400) saying what to set; a daemon with `IS_SANDBOX=1`
/// accepts it. Skipped (with the reason in the log) when not running as root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_sandbox_is_checked_at_start_up_and_at_run_creation() {
    if loop_engine::process::effective_uid() != Some(0) {
        eprintln!("skipped: the IS_SANDBOX rule only applies to root");
        return;
    }
    let data = tempfile::tempdir().expect("data dir");
    let (repo, _script) = repo_with_agent(1);
    let mut req = create_request(&repo);
    let mut claude = serde_json::Map::new();
    claude.insert("executor".into(), serde_json::json!("claude"));
    req.config_override = Some(claude);
    let port = free_port();
    let mut daemon = start_with_env(data.path(), port, &[("IS_SANDBOX", "yes")]).await;
    let err = daemon
        .client
        .create_run(&req)
        .await
        .map(|c| c.run.id)
        .expect_err("refused");
    match &err {
        loop_http::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 400, "{message}");
            assert!(
                message.contains("IS_SANDBOX") && message.contains("export IS_SANDBOX=1"),
                "{message}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let stderr =
        std::fs::read_to_string(data.path().join(format!("loopd-{port}.stderr"))).expect("log");
    assert_eq!(
        stderr.matches("refused until then").count(),
        1,
        "one start-up warning: {stderr}"
    );
    assert!(stderr.contains("IS_SANDBOX is `yes`"), "{stderr}");
    // Runs of other executors are not concerned.
    daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("executor=command accepted");
    signal(&daemon.child, Signal::SIGTERM);
    let _ = daemon.child.wait().await;
    // With IS_SANDBOX=1 the Claude run is accepted.
    let port = free_port();
    let mut daemon = start_with_env(data.path(), port, &[("IS_SANDBOX", "1")]).await;
    let created = daemon.client.create_run(&req).await.expect("accepted");
    daemon.client.cancel(created.run.id).await.expect("cancel");
    signal(&daemon.child, Signal::SIGTERM);
    let _ = daemon.child.wait().await;
}
