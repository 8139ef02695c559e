//! Test harness: a git repository with a spec and a 3-task plan, an engine with the simulated
//! agent, its scheduler and the HTTP server, plus a raw HTTP helper for requests the typed
//! client would never send.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use loop_engine::Engine;
use loop_engine::backend::Store;
use loop_engine::domain::{RunId, RunStatus};
use loop_engine::engine::EngineSettings;
use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
use loop_engine::testing::GitFixture;
use loop_http::api::{CreateRunRequest, RunResource};
use loop_http::{Client, ServerOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const TOKEN: &str = "test-token-0123456789";
pub(crate) const SPEC: &str = "# Widget\n\nBuild the widget.\n";
pub(crate) const PLAN: &str =
    "# Widget plan\n\n## Tasks\n- [ ] Task number 1\n- [ ] Task number 2\n- [ ] Task number 3\n";

/// How a test server is set up.
pub(crate) struct Setup {
    /// Per agent call.
    pub(crate) agent_delay: Duration,
    /// Start the engine's scheduler (otherwise runs stay `PENDING`).
    pub(crate) scheduler: bool,
    /// SSE keep-alive interval.
    pub(crate) keepalive: Duration,
    /// The engine's store (default: a fresh `MemoryStore`).
    pub(crate) store: Option<Arc<dyn Store>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            agent_delay: Duration::ZERO,
            scheduler: true,
            keepalive: Duration::from_secs(15),
            store: None,
        }
    }
}

pub(crate) struct Server {
    pub(crate) repo: GitFixture,
    pub(crate) engine: Engine,
    pub(crate) addr: SocketAddr,
    pub(crate) client: Client,
    pub(crate) shutdown: CancellationToken,
    pub(crate) serve: Option<JoinHandle<std::io::Result<()>>>,
    scheduler: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::with(Setup::default()).await
    }

    /// A server whose engine does not run its scheduler: created runs stay `PENDING`.
    pub(crate) async fn idle() -> Self {
        Self::with(Setup {
            scheduler: false,
            ..Setup::default()
        })
        .await
    }

    pub(crate) async fn with(setup: Setup) -> Self {
        let repo = GitFixture::new();
        let global = repo.root().join("global-logs");
        repo.write_file(
            ".loop/config",
            &format!(
                "run_naming_mode=spec_slug\nreviewer=false\npostmortem=false\nglobal_log_dir={}\nclaude_retry_backoff_sec=0\n",
                global.display()
            ),
        );
        repo.write_file("specs/widget.md", SPEC);
        repo.write_file("specs/planning/widget-plan.md", PLAN);
        repo.write_file(".gitignore", "logs/\n");
        repo.commit_all("spec and plan");
        let agent = SimulatedAgent::new()
            .with_delay(setup.agent_delay)
            .with_git_env(repo.env());
        let engine = Engine::builder()
            .store_arc(
                setup
                    .store
                    .unwrap_or_else(|| Arc::new(MemoryStore::new()) as Arc<dyn Store>),
            )
            .executor(agent)
            .vcs(GitCli::with_env(repo.env()))
            .settings(EngineSettings {
                worker_id: "http-test".into(),
                ..EngineSettings::default()
            })
            .build()
            .expect("engine builds");
        let scheduler = setup.scheduler.then(|| {
            let e = engine.clone();
            tokio::spawn(async move {
                e.run().await.expect("scheduler runs");
            })
        });
        let opts = ServerOptions {
            keepalive: setup.keepalive,
            ..ServerOptions::new(TOKEN)
        };
        let (addr, client, shutdown, serve) = serve_engine(engine.clone(), opts).await;
        Self {
            repo,
            engine,
            addr,
            client,
            shutdown,
            serve: Some(serve),
            scheduler,
        }
    }

    /// Creates a run of the fixture's spec through the client and returns its id.
    pub(crate) async fn queued_run(&self) -> RunId {
        self.client
            .create_run(&self.request())
            .await
            .expect("create")
            .run
            .id
    }

    pub(crate) fn request(&self) -> CreateRunRequest {
        CreateRunRequest {
            spec_path: "specs/widget.md".into(),
            workspace_root: self.repo.path().to_path_buf(),
            ..CreateRunRequest::default()
        }
    }

    /// Polls the run until `done` holds (30 s at most).
    pub(crate) async fn wait_for(
        &self,
        id: RunId,
        done: impl Fn(&RunResource) -> bool,
    ) -> RunResource {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let run = self.client.get_run(id).await.expect("get run");
            if done(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} did not reach the expected state; last seen {:?}",
                run.status
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn wait_status(&self, id: RunId, status: RunStatus) -> RunResource {
        self.wait_for(id, |r| r.status == status).await
    }

    /// A raw request with exactly the given headers (plus `Host` unless given).
    pub(crate) async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.raw_response(method, path, headers, body).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, bytes)
    }

    pub(crate) async fn raw_response(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response<Incoming> {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", self.addr.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("request");
        sender.send_request(req).await.expect("response")
    }

    /// A raw request with the token (and `Content-Type: application/json` with a body).
    pub(crate) async fn authed(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, serde_json::Value) {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let (status, _, bytes) = self.raw(method, path, &headers, body).await;
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        (status, json)
    }
}

/// Serves `engine` on a fresh loopback port; returns the address, a client with the token,
/// the shutdown token and the server task.
pub(crate) async fn serve_engine(
    engine: Engine,
    opts: ServerOptions,
) -> (
    SocketAddr,
    Client,
    CancellationToken,
    JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    let serve = tokio::spawn(loop_http::serve(listener, engine, opts, shutdown.clone()));
    let client = Client::new(&format!("http://{addr}"), Some(TOKEN.into())).expect("client");
    (addr, client, shutdown, serve)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.engine.shutdown();
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
    }
}

/// The `error.message` of an error answer.
pub(crate) fn message(json: &serde_json::Value) -> String {
    json["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {json}"))
        .to_owned()
}

/// The `error.code` of an error answer.
pub(crate) fn code(json: &serde_json::Value) -> String {
    json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {json}"))
        .to_owned()
}
