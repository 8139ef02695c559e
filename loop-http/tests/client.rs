//! Client behaviour that needs no run: readiness probing and unreachable daemons.

use std::time::{Duration, Instant};

use loop_http::{Client, ClientError};

use crate::support::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_gives_up_on_a_closed_port_naming_the_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), None).expect("client");
    let started = Instant::now();
    let e = client
        .wait_ready(Duration::from_millis(900))
        .await
        .expect_err("nothing listens");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "it retried for a while: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "it stopped at its timeout: {took:?}"
    );
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_returns_health_once_the_server_answers() {
    let server = Server::start().await;
    let health = server
        .client
        .wait_ready(Duration::from_secs(5))
        .await
        .expect("ready");
    assert_eq!(health.status, "ok");
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
}
