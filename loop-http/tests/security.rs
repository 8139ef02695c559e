//! Token auth and the DNS-rebinding guards.

use loop_engine::domain::RunId;

use crate::support::{Server, TOKEN, code};

fn routes(id: RunId) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/runs".into()),
        ("POST", "/runs".into()),
        ("POST", "/prompt".into()),
        ("GET", "/metrics".into()),
        ("GET", format!("/runs/{id}")),
        ("POST", format!("/runs/{id}/pause")),
        ("POST", format!("/runs/{id}/resume")),
        ("POST", format!("/runs/{id}/cancel")),
        ("GET", format!("/runs/{id}/steps")),
        ("GET", format!("/runs/{id}/artifacts")),
        ("GET", format!("/runs/{id}/steps/1/log")),
        ("GET", format!("/runs/{id}/events")),
        ("GET", format!("/runs/{id}/output")),
        ("GET", "/nope".into()),
        ("POST", "/health".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_needs_the_token() {
    let server = Server::idle().await;
    let id = server.queued_run().await;
    for (method, path) in routes(id) {
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong-token")],
            vec![("authorization", TOKEN)],
        ] {
            let (status, _, body) = server.raw(method, &path, &headers, None).await;
            assert_eq!(status, 401, "{method} {path} with {headers:?}");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(code(&json), "unauthorized");
            assert!(!String::from_utf8_lossy(&body).contains(TOKEN));
        }
    }
    let (status, _, body) = server.raw("GET", "/health", &[], None).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["running"], 0);
    // The run is untouched by all of the above.
    assert_eq!(
        server.client.get_run(id).await.expect("run").status,
        loop_engine::domain::RunStatus::Pending
    );
    let anonymous =
        loop_http::Client::new(&format!("http://{}", server.addr), None).expect("client");
    let e = anonymous.get_run(id).await.expect_err("no token");
    assert!(
        matches!(e, loop_http::ClientError::Unauthorized { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("LOOPD_TOKEN"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused() {
    let server = Server::idle().await;
    let auth = format!("Bearer {TOKEN}");
    let port = server.addr.port();
    let evil_host = format!("evil.example:{port}");
    for path in ["/health", "/runs"] {
        let (status, _, body) = server
            .raw(
                "GET",
                path,
                &[("host", &evil_host), ("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, 403, "{path}");
        assert!(String::from_utf8_lossy(&body).contains("evil.example"));
        let (status, _, _) = server
            .raw(
                "GET",
                path,
                &[("origin", "http://evil.example"), ("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(status, 403, "{path}");
    }
    let localhost = format!("localhost:{port}");
    let origin = format!("http://localhost:{port}");
    let (status, _, _) = server
        .raw(
            "GET",
            "/runs",
            &[
                ("host", &localhost),
                ("origin", &origin),
                ("authorization", &auth),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// A daemon listening on another loopback address (`LOOPD_LISTEN=127.0.0.2:<port>`) accepts
/// requests naming that address as their Host and Origin (issue 12 item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_another_loopback_address_accepts_its_own_host() {
    let engine = loop_engine::Engine::builder()
        .store(loop_engine::impls::MemoryStore::new())
        .build()
        .expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let addr = listener.local_addr().expect("addr");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _serve = tokio::spawn(loop_http::serve(
        listener,
        engine,
        loop_http::ServerOptions::new(TOKEN),
        shutdown.clone(),
    ));
    let client =
        loop_http::Client::new(&format!("http://{addr}"), Some(TOKEN.into())).expect("client");
    assert_eq!(client.health().await.expect("health").status, "ok");
    let runs = client
        .list_runs(&loop_http::api::ListQuery::default())
        .await
        .expect("an authenticated route answers");
    assert!(runs.is_empty());
    shutdown.cancel();
}
