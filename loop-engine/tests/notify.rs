//! The built-in notifiers (issue 14 item 5): a signed JSON webhook received by a local
//! server, `notify_cmd` with the JSON on stdin, a failed run with its reason, retries with
//! backoff, and a webhook that is down or silent never slowing a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use loop_engine::backend::{ExecPurpose, Notification, NotificationKind, Notifier};
use loop_engine::domain::RunStatus;
use loop_engine::impls::SimulatedAgent;
use loop_engine::impls::notify::{QueuedNotifier, RetryPolicy, WebhookNotifier};
use loop_engine::testing::{Act, ScriptedExecutor, WebhookReceiver};
use sha2::{Digest, Sha256};

use crate::support::{Harness, Setup};

/// HMAC-SHA256 written out again on the receiving side, as a receiver would: the test does
/// not take the engine's word for its own signature.
fn expected_signature(secret: &[u8], body: &[u8]) -> String {
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), body].concat());
    let outer = Sha256::digest([opad.as_slice(), &inner[..]].concat());
    let hex: String = outer.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn setup(config: Vec<(&'static str, String)>) -> Setup {
    Setup {
        config,
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_and_notify_cmd_tell_of_the_end() {
    let hook = WebhookReceiver::start([]).await;
    let out = tempfile::tempdir().expect("temp dir");
    let cmd_file = out.path().join("cmd.json");
    let h = Harness::new(
        setup(vec![
            ("notify_webhook_url", hook.url("/hooks/loop")),
            ("notify_webhook_secret", "s3cret".into()),
            (
                "notify_cmd",
                format!(
                    "cat > {}; echo \"$LOOP_NOTIFY_KIND $LOOP_NOTIFY_EVENT $LOOP_NOTIFY_RUN_ID\" > {}.env",
                    cmd_file.display(),
                    cmd_file.display()
                ),
            ),
        ]),
        SimulatedAgent::new(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed);
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "one notification: the end of the run");
    let req = &got[0];
    assert_eq!(req.request_line, "POST /hooks/loop HTTP/1.1");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-loop-event"), Some("run_completed"));
    assert_eq!(
        req.header("x-loop-signature"),
        Some(expected_signature(b"s3cret", &req.body).as_str()),
        "the signature is the HMAC-SHA256 of the exact body"
    );
    let body = req.json();
    assert_eq!(body["kind"], "run_completed");
    assert_eq!(body["event"], "RUN_COMPLETED");
    assert_eq!(body["run_id"], run.id.to_string());
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["exit_reason"], "complete_plan");
    assert_eq!(body["tasks_done"], 3);
    assert_eq!(body["payload"]["mode"], "complete_plan");
    assert!(
        body.get("config").is_none(),
        "the run's config is never sent"
    );
    // notify_cmd got the same JSON on stdin.
    for _ in 0..400 {
        if cmd_file.with_extension("json.env").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let text = std::fs::read_to_string(&cmd_file).expect("notify_cmd wrote its stdin");
    let stdin: serde_json::Value = serde_json::from_str(&text).expect("JSON on stdin");
    assert_eq!(stdin, body);
    let env = std::fs::read_to_string(cmd_file.with_extension("json.env")).expect("env file");
    assert_eq!(
        env.trim(),
        format!("run_completed RUN_COMPLETED {}", run.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_is_notified_with_its_reason() {
    let hook = WebhookReceiver::start([]).await;
    let exec = ScriptedExecutor::new([(
        ExecPurpose::Implementation,
        Act::Fail {
            code: 3,
            stderr: "the agent broke down".into(),
        },
    )]);
    let h = Harness::new(setup(vec![("notify_webhook_url", hook.url("/"))]), exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["kind"], "run_failed");
    assert_eq!(body["exit_reason"], "claude_failed");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the agent broke down")),
        "{body}"
    );
    assert!(
        got[0].header("x-loop-signature").is_none(),
        "no secret, no signature"
    );
}

/// A receiver answering 503 twice gets the third try, with the same delivery id each time,
/// after the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_retried_with_backoff() {
    let hook = WebhookReceiver::start([503, 503]).await;
    let h = Harness::new(setup(vec![]), SimulatedAgent::new());
    let run = h.run_one().await;
    let webhook = WebhookNotifier::new(&hook.url("/x"), Some("k")).expect("url");
    let queued = QueuedNotifier::spawn(
        "test",
        Arc::new(webhook),
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            capacity: 4,
        },
    );
    let note = Notification {
        kind: NotificationKind::RunCompleted,
        run: run.clone(),
        reason: None,
        event: h.events(run.id).await.into_iter().last(),
    };
    let started = Instant::now();
    queued.notify(&note).await.expect("enqueued at once");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "notify only enqueues"
    );
    let got = hook.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "two 503s, then delivered");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "100 ms then 200 ms apart: {waited:?}"
    );
    let ids: Vec<_> = got.iter().map(|r| r.header("x-loop-delivery")).collect();
    assert!(
        ids.iter().all(|id| id.is_some() && *id == ids[0]),
        "{ids:?}"
    );
    // A 4xx other than 408/429 is not retried.
    let refusing = WebhookReceiver::start([404]).await;
    let queued = QueuedNotifier::spawn(
        "refused",
        Arc::new(WebhookNotifier::new(&refusing.url("/"), None).expect("url")),
        RetryPolicy {
            first_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
    );
    queued.notify(&note).await.expect("enqueued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refusing.received().len(), 1, "404 is final");
}

/// The run's wall time with a webhook that refuses connections, and with one that accepts
/// and never answers, is the same as without a webhook: delivery happens off the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_does_not_slow_the_run() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}/hook")
    };
    let silent = WebhookReceiver::black_hole().await;
    let agent = || SimulatedAgent::new().with_delay(Duration::from_millis(100));
    let mut walls = Vec::new();
    for (label, url) in [
        ("none", None),
        ("refused", Some(closed.clone())),
        ("silent", Some(silent.url("/hook"))),
    ] {
        let config = url
            .map(|u| vec![("notify_webhook_url", u)])
            .unwrap_or_default();
        let h = Harness::new(setup(config), agent());
        let started = Instant::now();
        let run = h.create().await;
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            let engine = h.engine.clone();
            let driver = tokio::spawn(async move { engine.run_until_idle().await });
            let ended = h.engine.wait(run.id).await.expect("wait");
            driver.await.expect("task").expect("engine");
            ended
        })
        .await
        .expect("the run ends in time");
        let wall = started.elapsed();
        assert_eq!(ended.status, RunStatus::Completed, "{label}");
        eprintln!("notify: run wall with webhook {label}: {wall:?}");
        walls.push(wall);
    }
    assert_eq!(
        silent.wait_for(1, Duration::from_secs(5)).await.len(),
        1,
        "it was tried"
    );
    let base = walls[0];
    for wall in &walls[1..] {
        assert!(
            *wall < base + Duration::from_millis(750),
            "a dead webhook must not slow the run: {walls:?}"
        );
    }
}
