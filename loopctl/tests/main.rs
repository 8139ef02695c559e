//! loopctl against a real server on 127.0.0.1 (the loop-http server with an in-process engine
//! and the simulated agent): every command's `--json` output parses, the rendered `inspect`
//! and `tail` output has the expected shape, and exit codes follow the README's table.

use std::path::Path;
use std::time::Duration;

use loop_engine::engine::{Engine, EngineSettings};
use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
use loop_engine::process::{Cmd, CmdOutput};
use loop_engine::testing::GitFixture;
use loop_http::{ServerOptions, serve};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-123";

struct Daemon {
    addr: String,
    repo: GitFixture,
    shutdown: CancellationToken,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn daemon(delay_ms: u64) -> Daemon {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\nrun_naming_mode=spec_slug\nglobal_log_dir={}\n",
            repo.root().join("global").display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file(
        "specs/planning/widget-plan.md",
        "- [ ] first task\n- [ ] second task\n",
    );
    repo.commit_all("spec and plan");
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(
            SimulatedAgent::new()
                .with_delay(Duration::from_millis(delay_ms))
                .with_git_env(repo.env()),
        )
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings::default())
        .build()
        .expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run().await });
    }
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(
                listener,
                engine,
                ServerOptions::new(TOKEN.to_owned()),
                shutdown,
            )
            .await
        });
    }
    Daemon {
        addr,
        repo,
        shutdown,
    }
}

async fn loopctl(d: &Daemon, cwd: &Path, args: &[&str]) -> CmdOutput {
    Cmd::new(env!("CARGO_BIN_EXE_loopctl"), cwd)
        .args(["--addr", &d.addr, "--token", TOKEN])
        .args(args)
        .env("NO_COLOR", "1")
        .timeout(Some(Duration::from_secs(60)))
        .output()
        .await
        .expect("loopctl runs")
}

fn json(out: &CmdOutput) -> serde_json::Value {
    assert!(out.success(), "exit {}: {}", out.code, out.stderr_text());
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output must parse ({e}): {}", out.stdout_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_inspect_list_logs_with_json() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let created = json(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "widget");
    assert_eq!(created["run_branch"], "run/widget");

    let waited = loopctl(&d, &repo, &["wait", &id]).await;
    assert_eq!(
        waited.code,
        0,
        "wait exits 0 on COMPLETED: {}",
        waited.stderr_text()
    );
    assert!(waited.stdout_text().contains("COMPLETED"));

    let inspected = json(&loopctl(&d, &repo, &["--json", "inspect", &id]).await);
    assert_eq!(inspected["run"]["status"], "COMPLETED");
    assert!(inspected["steps"].as_array().expect("steps").len() >= 2);

    let listed = json(&loopctl(&d, &repo, &["--json", "list", "--status", "completed"]).await);
    assert_eq!(listed.as_array().expect("runs").len(), 1);

    // The rendered inspect view: aligned keys, the steps table, the artifact paths.
    let text = loopctl(&d, &repo, &["inspect", &id]).await.stdout_text();
    let masked = text.replace(&id, "<id>");
    let lines: Vec<&str> = masked.lines().collect();
    assert_eq!(lines[0], "id           <id>");
    assert_eq!(lines[1], "name         widget (spec_slug)");
    assert_eq!(lines[2], "status       COMPLETED");
    assert_eq!(lines[3], "exit reason  complete_plan");
    assert_eq!(lines[4], "tasks        2/2 done");
    assert!(
        masked.contains("\nsteps:\n#  LABEL  PHASE           STATUS     EXIT  TIME"),
        "{masked}"
    );
    assert!(masked.contains("\nartifacts:\nKIND"), "{masked}");
    assert!(masked.contains("summary.json"), "{masked}");

    // The stored log of the first agent step.
    let logs = loopctl(&d, &repo, &["logs", &id, "--step", "1"]).await;
    assert!(logs.success(), "{}", logs.stderr_text());
    assert!(
        logs.stdout_text().contains("Completed first task"),
        "{}",
        logs.stdout_text()
    );

    // tail on a finished run prints the last step's output and the final status line.
    let tail = loopctl(&d, &repo, &["tail", &id]).await;
    assert!(tail.success(), "{}", tail.stderr_text());
    let t = tail.stdout_text();
    assert!(t.contains("<promise>COMPLETE</promise>"), "{t}");
    assert!(
        t.lines()
            .last()
            .unwrap_or("")
            .starts_with("[COMPLETED] iteration"),
        "{t}"
    );

    let prompt = loopctl(&d, &repo, &["prompt", "specs/widget.md"]).await;
    assert!(prompt.success(), "{}", prompt.stderr_text());
    assert!(prompt.stdout_text().starts_with('@'), "context line first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_a_live_run_to_the_end() {
    let d = daemon(150).await;
    let repo = d.repo.path().to_path_buf();
    let created = json(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let id = created["id"].as_str().expect("id").to_owned();
    let tail = loopctl(&d, &repo, &["tail", &id]).await;
    assert!(tail.success(), "{}", tail.stderr_text());
    let t = tail.stdout_text();
    // Both agent answers, once each, in order, then the final status.
    let first = t.find("Completed first task").expect("first answer");
    let second = t
        .find("<promise>COMPLETE</promise>")
        .expect("second answer");
    assert!(first < second);
    assert_eq!(t.matches("Completed first task").count(), 1, "{t}");
    assert!(t.contains("| tasks 2/2 |"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_documented_exit_codes() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let bad_id = loopctl(&d, &repo, &["inspect", "not-a-uuid"]).await;
    assert_eq!(bad_id.code, 64);
    let unknown = loopctl(
        &d,
        &repo,
        &["inspect", "01a20f00-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(unknown.code, 66, "{}", unknown.stderr_text());
    let bad_config = loopctl(
        &d,
        &repo,
        &["run", "specs/widget.md", "--set", "iterations=lots"],
    )
    .await;
    assert_eq!(bad_config.code, 65);
    let msg = bad_config.stderr_text();
    assert!(msg.contains("iterations") && msg.contains("lots"), "{msg}");
    let missing = loopctl(&d, &repo, &["run", "specs/nope.md"]).await;
    assert_eq!(missing.code, 65, "{}", missing.stderr_text());
    let wrong_token = Cmd::new(env!("CARGO_BIN_EXE_loopctl"), &repo)
        .args(["--addr", &d.addr, "--token", "wrong", "list"])
        .output()
        .await
        .expect("runs");
    assert_eq!(wrong_token.code, 77, "{}", wrong_token.stderr_text());
    assert!(wrong_token.stderr_text().contains("LOOPD_TOKEN"));
    let down = Cmd::new(env!("CARGO_BIN_EXE_loopctl"), &repo)
        .args(["--addr", "http://127.0.0.1:9", "list"])
        .output()
        .await
        .expect("runs");
    assert_eq!(down.code, 69);
    assert!(
        down.stderr_text().contains("127.0.0.1:9"),
        "{}",
        down.stderr_text()
    );
}
