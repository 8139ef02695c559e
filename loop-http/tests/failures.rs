//! A failing store and a panicking handler: the server degrades, answers 500 for the request
//! at hand, and keeps serving.

use std::sync::Arc;
use std::time::Duration;

use loop_engine::Engine;
use loop_engine::backend::{MockStore, StoreError};
use loop_engine::domain::{RunId, RunStatus};
use loop_engine::impls::MemoryStore;
use loop_engine::testing::FaultyStore;
use loop_http::{ClientError, ServerOptions};

use crate::support::{Server, Setup, TOKEN, serve_engine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_degrades_health_and_a_panic_is_a_500() {
    let mut store = MockStore::new();
    store
        .expect_check_health()
        .returning(|| Err(StoreError::Fatal("disk on fire".into())));
    store
        .expect_count_runs_by_status()
        .returning(|| Err(StoreError::Fatal("disk on fire".into())));
    store
        .expect_get_run()
        .returning(|_| panic!("handler bug triggered on purpose"));
    let engine = Engine::builder().store(store).build().expect("engine");
    let (_addr, client, shutdown, _serve) = serve_engine(engine, ServerOptions::new(TOKEN)).await;

    let health = client.health().await.expect("health answers");
    assert_eq!(health.status, "degraded");
    assert!(
        health
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("disk on fire"),
        "{health:?}"
    );

    let e = client.metrics().await.expect_err("metrics need the store");
    assert!(
        matches!(&e, ClientError::Api { status: 500, code, message } if code == "store_error" && message.contains("disk on fire")),
        "{e}"
    );

    for _ in 0..2 {
        let e = client
            .get_run(RunId::new())
            .await
            .expect_err("the handler panics");
        assert!(
            matches!(&e, ClientError::Api { status: 500, code, .. } if code == "internal"),
            "{e}"
        );
    }
    assert_eq!(
        client.health().await.expect("still serving").status,
        "degraded"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_empty_token() {
    let engine = Engine::builder()
        .store(loop_engine::impls::MemoryStore::new())
        .build()
        .expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let e = loop_http::serve(
        listener,
        engine,
        ServerOptions::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("no token");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("token"));
}

/// A store that cannot write for a while (issue 12: the daemon must not wedge): `/health`
/// says so while it lasts and recovers after, the run that met the outage ends FAILED with the
/// store's error and frees its slot, and a new run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_reported_by_health_and_runs_go_on_after_it() {
    let store = FaultyStore::new(Arc::new(MemoryStore::new()));
    let server = Server::with(Setup {
        agent_delay: Duration::from_millis(400),
        store: Some(Arc::new(store.clone())),
        ..Setup::default()
    })
    .await;
    assert_eq!(server.client.health().await.expect("health").status, "ok");
    let run = server
        .client
        .create_run(&server.request())
        .await
        .expect("created")
        .run
        .id;
    server.wait_status(run, RunStatus::Running).await;
    // Let the agent's first step start, then take the store away for a while.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.fail();
    let health = server.client.health().await.expect("health answers");
    assert_eq!(health.status, "degraded", "{health:?}");
    assert!(
        health
            .problem
            .as_deref()
            .unwrap_or_default()
            .contains("no space left on device"),
        "{health:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.recover();
    assert_eq!(server.client.health().await.expect("health").status, "ok");

    let failed = server.wait_for(run, |r| r.status.is_terminal()).await;
    assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
    assert!(
        failed
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains("no space left on device"),
        "{failed:?}"
    );
    // The slot is freed (the driver lets go of it right after recording the end).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.engine.running_runs().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot is not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New runs proceed.
    let again = server
        .client
        .create_run(&server.request())
        .await
        .expect("created after the outage")
        .run
        .id;
    let done = server.wait_for(again, |r| r.status.is_terminal()).await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
}
