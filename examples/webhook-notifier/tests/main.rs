//! The webhook notifier against a local HTTP server: a whole run's notifications arrive as
//! JSON, in order.

use loop_engine::domain::RunStatus;
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
use loop_engine::testing::GitFixture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_notifier::WebhookNotifier;

/// Accepts `n` POSTs and returns their JSON bodies.
async fn receive(listener: tokio::net::TcpListener, n: usize) -> Vec<serde_json::Value> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        let (mut sock, _) = listener.accept().await.expect("test server");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let read = sock.read(&mut chunk).await.expect("test server");
            assert!(read > 0, "connection closed early");
            buf.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().expect("test server"))
                    })
                    .expect("test server");
                if body.len() >= len {
                    assert!(head.starts_with("POST /hook "), "{head}");
                    break body[..len].to_owned();
                }
            }
        };
        sock.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("test server");
        bodies.push(serde_json::from_str(&body).expect("test server"));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifications_are_posted_as_json() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(receive(listener, 2));

    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\n",
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/demo.md", "# Demo\n");
    repo.write_file("specs/planning/demo-plan.md", "- [ ] only task\n");
    repo.commit_all("spec and plan");
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(SimulatedAgent::new().with_git_env(repo.env()))
        .notifier(WebhookNotifier::new(&url).unwrap())
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
    assert_eq!(
        engine.get_run(run.id).await.unwrap().status,
        RunStatus::Completed
    );
    let bodies = server.await.unwrap();
    assert_eq!(bodies[0]["event"], "run_started");
    assert_eq!(bodies[1]["event"], "run_completed");
    assert_eq!(bodies[1]["run_id"], run.id.to_string());
    assert_eq!(bodies[1]["status"], "COMPLETED");
}

#[test]
fn only_http_urls_are_accepted() {
    assert!(WebhookNotifier::new("https://example.invalid/x").is_err());
    assert!(WebhookNotifier::new("http://:80/x").is_err());
    assert!(WebhookNotifier::new("http://127.0.0.1:9/x").is_ok());
}
