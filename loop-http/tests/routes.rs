//! The JSON routes: creating, listing and inspecting runs, pause/resume/cancel, the prompt
//! preview, and every error answer.

use std::time::Duration;

use loop_engine::domain::{RunId, RunStatus};
use loop_http::ClientError;
use loop_http::api::ListQuery;

use crate::support::{Server, Setup, code, message};

fn json_body(v: serde_json::Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(&v).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_can_be_paused_resumed_and_canceled() {
    let server = Server::with(Setup {
        agent_delay: Duration::from_millis(300),
        ..Setup::default()
    })
    .await;
    let id = server.queued_run().await;
    server.wait_status(id, RunStatus::Running).await;
    server.client.pause(id).await.expect("pause");
    let paused = server.wait_status(id, RunStatus::Paused).await;
    assert!(paused.tasks_done < 3, "paused before the end");
    // Pausing a paused run is a no-op.
    assert_eq!(
        server.client.pause(id).await.expect("pause again").status,
        RunStatus::Paused
    );
    let resumed = server.client.resume(id).await.expect("resume");
    assert!(matches!(
        resumed.status,
        RunStatus::Pending | RunStatus::Running
    ));
    server.wait_status(id, RunStatus::Running).await;
    server.client.cancel(id).await.expect("cancel");
    let canceled = server.wait_status(id, RunStatus::Canceled).await;
    assert_eq!(canceled.exit_reason.as_deref(), Some("canceled"));
    for action in ["pause", "resume", "cancel"] {
        let (status, json) = server
            .authed("POST", &format!("/runs/{id}/{action}"), None)
            .await;
        assert_eq!(status, 409, "{action}: {json}");
        assert_eq!(code(&json), "invalid_state");
        let msg = message(&json);
        assert!(
            msg.contains(&id.to_string()) && msg.contains("CANCELED"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_and_filtered() {
    let server = Server::idle().await;
    let a = server
        .client
        .create_run(&server.request())
        .await
        .expect("create")
        .run
        .id;
    let b = server
        .client
        .create_run(&server.request())
        .await
        .expect("create")
        .run
        .id;
    server.client.cancel(a).await.expect("cancel");
    let all = server
        .client
        .list_runs(&ListQuery::default())
        .await
        .expect("list");
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, a]);
    let pending = server
        .client
        .list_runs(&ListQuery {
            statuses: vec![RunStatus::Pending, RunStatus::Paused],
            workspace_root: Some(server.repo.path().to_path_buf()),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
    let one = server
        .client
        .list_runs(&ListQuery {
            limit: Some(1),
            before: Some(b),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    let (status, json) = server
        .authed("GET", "/runs?status=PENDING,BOGUS", None)
        .await;
    assert_eq!(status, 400);
    assert!(message(&json).contains("BOGUS"), "{json}");
    let (status, json) = server.authed("GET", "/runs?limit=5000", None).await;
    assert_eq!(status, 400, "{json}");
    let (status, json) = server.authed("GET", &format!("/runs/{b}"), None).await;
    assert_eq!(status, 200);
    for field in [
        "id",
        "name",
        "name_source",
        "status",
        "exit_reason",
        "failure",
        "workspace_root",
        "spec_path",
        "plan_path",
        "base_branch",
        "run_branch",
        "merge_target_branch",
        "merge_strategy",
        "worktree_path",
        "iterations_run",
        "tasks_done",
        "tasks_total",
        "created_at",
        "created_at_ms",
        "updated_at",
        "updated_at_ms",
        "last_step",
        "config",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    assert_eq!(json["last_step"], serde_json::Value::Null);
    assert_eq!(json["config"]["reviewer"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_preview_names_the_spec_and_plan() {
    let server = Server::idle().await;
    let preview = server
        .client
        .prompt(&server.request())
        .await
        .expect("prompt");
    assert!(
        preview.implementation.contains("specs/widget.md"),
        "{}",
        preview.implementation
    );
    assert!(preview.implementation.contains("widget-plan.md"));
    assert_eq!(preview.reviewer, None);
    let mut req = server.request();
    req.spec_path = "specs/missing.md".into();
    let e = server.client.prompt(&req).await.expect_err("missing spec");
    assert!(
        matches!(&e, ClientError::Api { status: 400, code, message } if code == "spec_not_found" && message.contains("missing.md")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors_and_the_server_survives() {
    let server = Server::idle().await;
    let ws = server.repo.path().display().to_string();

    let (status, json) = server
        .authed("POST", "/runs", Some(b"{not json".to_vec()))
        .await;
    assert_eq!(
        (status.as_u16(), code(&json).as_str()),
        (400, "invalid_json"),
        "{json}"
    );

    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": "specs/widget.md", "workspace_root": ws, "colour": "red"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&json).contains("colour"), "{json}");

    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": 5, "workspace_root": ws})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&json).contains("invalid type"), "{json}");

    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": "specs/nope.md", "workspace_root": ws})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(message(&json).contains("nope.md"), "{json}");

    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": "../../etc/passwd", "workspace_root": ws})),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    assert!(message(&json).contains("passwd"), "{json}");

    // A spec that exists but lies outside the workspace.
    let outside = server.repo.root().join("outside.md");
    std::fs::write(&outside, "# Outside\n").expect("write");
    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": outside, "plan_path": "specs/planning/widget-plan.md", "workspace_root": ws})),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    assert!(message(&json).contains("outside the workspace"), "{json}");

    let (status, json) = server
        .authed(
            "POST",
            "/runs",
            json_body(serde_json::json!({"spec_path": "specs/widget.md", "workspace_root": ws, "config_override": {"iterations": "lots"}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(code(&json), "invalid_config");
    let msg = message(&json);
    assert!(msg.contains("iterations") && msg.contains("lots"), "{msg}");

    let unknown = RunId::new();
    let (status, json) = server
        .authed("GET", &format!("/runs/{unknown}"), None)
        .await;
    assert_eq!(status, 404);
    assert!(message(&json).contains(&unknown.to_string()), "{json}");
    let e = server.client.steps(unknown).await.expect_err("unknown run");
    assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e}");

    let (status, json) = server.authed("GET", "/runs/not-a-uuid", None).await;
    assert_eq!(status, 400);
    assert!(message(&json).contains("not-a-uuid"), "{json}");

    let mut big = br#"{"spec_path": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    big.extend_from_slice(br#"", "workspace_root": "/"}"#);
    let (status, json) = server.authed("POST", "/runs", Some(big)).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(code(&json), "body_too_large");

    let (status, json) = server.authed("DELETE", "/runs", None).await;
    assert_eq!(status, 405, "{json}");
    let (status, _) = server
        .authed("GET", &format!("/runs/{unknown}/pause"), None)
        .await;
    assert_eq!(status, 405);
    let (status, json) = server.authed("GET", "/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(code(&json), "no_route");

    // Steps and logs that do not exist name the run and the step.
    let id = server.queued_run().await;
    let (status, json) = server
        .authed("GET", &format!("/runs/{id}/steps/7/log"), None)
        .await;
    assert_eq!(status, 404);
    let msg = message(&json);
    assert!(
        msg.contains(&id.to_string()) && msg.contains("step 7"),
        "{msg}"
    );
    let (status, _) = server
        .authed("GET", &format!("/runs/{id}/steps/x/log"), None)
        .await;
    assert_eq!(status, 400);

    let health = server.client.health().await.expect("health after all that");
    assert_eq!(health.status, "ok");
    assert_eq!(health.worker_id, "http-test");
    // Nothing above created a run except the last one.
    assert_eq!(
        server
            .client
            .list_runs(&ListQuery::default())
            .await
            .expect("list")
            .len(),
        1
    );
}

/// Two requests naming a FIFO as `config_file` do not freeze the API: both get a 400 naming
/// the file, and requests around them are answered (issue 12 item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_config_file_does_not_freeze_the_api() {
    let server = Server::start().await;
    let fifo = server.repo.root().join("config.fifo");
    let made = loop_engine::process::Cmd::new("mkfifo", server.repo.root())
        .arg(&fifo)
        .output()
        .await
        .expect("mkfifo runs");
    assert!(made.success(), "{}", made.stderr_text());
    let body = || {
        json_body(serde_json::json!({
            "spec_path": "specs/widget.md",
            "workspace_root": server.repo.path(),
            "config_file": fifo,
        }))
    };
    let (a, b, health) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(
            server.authed("POST", "/runs", body()),
            server.authed("POST", "/runs", body()),
            server.client.health(),
        )
    })
    .await
    .expect("nothing hangs on the FIFO");
    for (status, json) in [a, b] {
        assert_eq!(status, 400, "{json}");
        let text = message(&json);
        assert!(
            text.contains("config_file") && text.contains("FIFO"),
            "{text}"
        );
    }
    health.expect("health answers");
    server
        .client
        .create_run(&server.request())
        .await
        .expect("an ordinary run is still created");
}

/// A body that is not declared as JSON is refused with 415 before it is read; body-less
/// POSTs take no Content-Type; a query string that is not UTF-8 once decoded is a 400
/// (issue 12 item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_and_queries_utf8() {
    let server = Server::idle().await;
    let auth = format!("Bearer {}", crate::support::TOKEN);
    let body = serde_json::to_vec(&serde_json::json!({
        "spec_path": "specs/widget.md",
        "workspace_root": server.repo.path(),
    }))
    .expect("json");
    for path in ["/runs", "/prompt"] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(t) = content_type {
                headers.push(("content-type", t));
            }
            let (status, _, bytes) = server.raw("POST", path, &headers, Some(body.clone())).await;
            let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json error");
            assert_eq!(status, 415, "{path} {content_type:?}: {json}");
            assert_eq!(code(&json), "unsupported_media_type");
            assert!(message(&json).contains("application/json"), "{json}");
        }
        let (status, _, bytes) = server
            .raw(
                "POST",
                path,
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "Application/JSON; charset=utf-8"),
                ],
                Some(body.clone()),
            )
            .await;
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(
        server
            .client
            .list_runs(&ListQuery::default())
            .await
            .expect("list")
            .len()
            == 1,
        "only the JSON request created a run"
    );
    // Body-less POSTs need no Content-Type.
    let id = server
        .client
        .list_runs(&ListQuery::default())
        .await
        .expect("list")[0]
        .id;
    let (status, _, _) = server
        .raw(
            "POST",
            &format!("/runs/{id}/cancel"),
            &[("authorization", auth.as_str())],
            None,
        )
        .await;
    assert_eq!(status, 200);
    // Invalid UTF-8 in a query value.
    for query in ["status=%FF", "workspace_root=%C3%28", "%FE=1"] {
        let (status, json) = server.authed("GET", &format!("/runs?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {json}");
        assert_eq!(code(&json), "invalid_query");
    }
    let (status, json) = server
        .authed("GET", &format!("/runs/{id}/events?after=%FF"), None)
        .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(code(&json), "invalid_query");
    // Valid UTF-8 escapes still work.
    let (status, json) = server
        .authed("GET", "/runs?status=PENDING%2CCANCELED", None)
        .await;
    assert_eq!(status, 200, "{json}");
}
