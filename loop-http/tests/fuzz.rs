//! Hostile input (issue 6): over 10,000 generated raw requests against a real server on
//! 127.0.0.1 (bad JSON, huge bodies, wrong types, unknown ids, path traversal in
//! spec/plan/workspace/config paths, odd methods, broken headers), plus slow-loris
//! connections. Asserted: no 5xx but deliberate 503s, no panic, the server keeps serving,
//! nothing outside the workspace leaks into an answer, and no run is created from outside it.
//! The generator is a fixed-seed xorshift, so a failure replays exactly.

use std::net::SocketAddr;
use std::time::Duration;

use loop_engine::backend::RunFilter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Server, TOKEN};

/// Requests per worker; 8 workers.
const PER_WORKER: usize = 1_300;
const WORKERS: u64 = 8;
const SEED: u64 = 0x6C6F_6F70_6675_7A7A;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() & 0xff) as u8).collect()
    }
}

/// What the generator knows about the server under test.
struct World {
    addr: SocketAddr,
    workspace: String,
    known_id: String,
    secret_path: String,
}

/// One generated request and whether the server may drop it without an answer.
struct Generated {
    raw: Vec<u8>,
    may_drop: bool,
}

fn traversal(rng: &mut Rng, w: &World) -> String {
    let options = [
        "../secret.txt",
        "../../secret.txt",
        "specs/../../secret.txt",
        "specs/../../../../../../etc/passwd",
        "/etc/passwd",
        "/etc",
        "%2e%2e/secret.txt",
        "..\\secret.txt",
        "specs/\u{0}/widget.md",
        "~/.ssh/id_rsa",
        "",
        ".",
        "/",
        "specs/widget.md",
        "specs/planning/widget-plan.md",
        w.secret_path.as_str(),
    ];
    rng.pick(&options).to_owned()
}

fn json_value(rng: &mut Rng, w: &World, depth: u32) -> serde_json::Value {
    use serde_json::json;
    match rng.below(if depth > 2 { 7 } else { 9 }) {
        0 => json!(null),
        1 => json!(rng.chance(50)),
        2 => json!(rng.next() as i64),
        3 => json!(-1.5e300),
        4 => json!(traversal(rng, w)),
        5 => json!("x".repeat(rng.below(5000))),
        6 => json!(String::from_utf8_lossy(&rng.bytes(20)).into_owned()),
        7 => serde_json::Value::Array(
            (0..rng.below(4))
                .map(|_| json_value(rng, w, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                let key = rng
                    .pick(&[
                        "iterations",
                        "executor",
                        "agent_cmd",
                        "verify_cmds",
                        "spec_path",
                        "zzz",
                        "",
                    ])
                    .to_owned();
                m.insert(key, json_value(rng, w, depth + 1));
            }
            serde_json::Value::Object(m)
        }
    }
}

/// A run request with some fields hostile and some of the wrong type.
fn run_body(rng: &mut Rng, w: &World) -> Vec<u8> {
    use serde_json::json;
    let mut body = json!({
        "spec_path": "specs/widget.md",
        "workspace_root": w.workspace,
    });
    let fields = [
        "spec_path",
        "plan_path",
        "workspace_root",
        "config_file",
        "cwd",
        "name",
        "name_source",
        "merge_target_branch",
        "merge_strategy",
        "config_override",
        "unknown_field",
    ];
    for _ in 0..=rng.below(3) {
        let field = rng.pick(&fields);
        let value = match rng.below(4) {
            0 => json_value(rng, w, 0),
            1 if field == "workspace_root" => {
                json!(format!("{}/{}", w.workspace, traversal(rng, w)))
            }
            1 | 2 => json!(traversal(rng, w)),
            _ => {
                let key = rng.pick(loop_engine::config::KEYS);
                json!({ key: json_value(rng, w, 1) })
            }
        };
        body[field] = value;
    }
    let mut bytes = serde_json::to_vec(&body).expect("json");
    match rng.below(10) {
        // Truncated JSON.
        0 => bytes.truncate(rng.below(bytes.len().max(1))),
        // Garbage bytes.
        1 => {
            let n = rng.below(300);
            bytes = rng.bytes(n);
        }
        // Deep nesting.
        2 => {
            let depth = 1 + rng.below(5000);
            bytes = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        }
        // Not an object.
        3 => bytes = b"[1,2,3]".to_vec(),
        _ => {}
    }
    bytes
}

fn path(rng: &mut Rng, w: &World) -> String {
    let id = match rng.below(5) {
        0 => loop_engine::domain::RunId::new().to_string(),
        1 => rng
            .pick(&[
                "not-a-uuid",
                "..",
                "%2e%2e",
                "0",
                "",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
            ])
            .to_owned(),
        _ => w.known_id.clone(),
    };
    let seq = rng
        .pick(&["1", "0", "-1", "99999999999999999999", "abc", "%00"])
        .to_owned();
    let query = match rng.below(6) {
        0 => format!("?workspace_root={}", traversal(rng, w)),
        1 => format!(
            "?status={}&limit={}",
            rng.pick(&["RUNNING", "bogus", ""]),
            rng.pick(&["-1", "0", "5", "1e9", "x"])
        ),
        2 => format!(
            "?before={}",
            rng.pick(&["abc", "0", "99999999999999999999999"])
        ),
        3 => "?%ff%fe=%00".to_owned(),
        _ => String::new(),
    };
    let base = match rng.below(16) {
        0 => "/health".to_owned(),
        1 | 2 => "/runs".to_owned(),
        3 => format!("/runs/{id}"),
        4 => format!("/runs/{id}/{}", rng.pick(&["pause", "resume", "cancel"])),
        5 => format!("/runs/{id}/steps"),
        6 => format!("/runs/{id}/artifacts"),
        7 => format!("/runs/{id}/steps/{seq}/log"),
        8 => format!("/runs/{id}/{}", rng.pick(&["events", "output"])),
        9 => "/prompt".to_owned(),
        10 => "/metrics".to_owned(),
        11 => format!("/{}", traversal(rng, w)),
        12 => format!("/runs/{id}/../../{}", rng.pick(&["etc/passwd", "health"])),
        13 => format!("//runs///{id}//"),
        14 => format!("/runs/{id}/steps/{seq}/log/../../../../secret.txt"),
        _ => format!("/{}", "a/".repeat(rng.below(2000))),
    };
    format!("{base}{query}")
}

fn generate(rng: &mut Rng, w: &World) -> Generated {
    let method = rng
        .pick(&[
            "GET", "GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
            "HEAD", "TRACE", "CONNECT", "BREW", "get",
        ])
        .to_owned();
    let mut may_drop = false;
    let path = path(rng, w);
    let mut body = if method == "POST" || rng.chance(10) {
        run_body(rng, w)
    } else {
        Vec::new()
    };
    if rng.chance(2) {
        // Beyond the 1 MiB body limit.
        body = vec![b'{'; 1024 * 1024 + 1 + rng.below(1024 * 1024)];
        may_drop = true;
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", w.addr);
    match rng.below(10) {
        0 => {}
        1 => head.push_str("authorization: Bearer wrong\r\n"),
        2 => head.push_str(&format!("authorization: bearer {TOKEN}\r\n")),
        3 => head.push_str(&format!("authorization: Bearer {TOKEN}x\r\n")),
        _ => head.push_str(&format!("authorization: Bearer {TOKEN}\r\n")),
    }
    match rng.below(20) {
        0 => head.push_str("content-type: text/plain\r\n"),
        1 => head.push_str(&format!("x-junk: {}\r\n", "j".repeat(rng.below(20_000)))),
        2 => head.push_str("origin: http://evil.example\r\n"),
        3 => head.push_str("last-event-id: -5\r\n"),
        4 => head.push_str("last-event-id: 99999999999999999999999\r\n"),
        5 => head.push_str("accept: text/event-stream\r\n"),
        _ => head.push_str("content-type: application/json\r\n"),
    }
    let framing = rng.below(20);
    match framing {
        // A lying Content-Length: more than is sent (the server waits, then we hang up).
        0 => {
            head.push_str(&format!("content-length: {}\r\n", body.len() + 10));
            may_drop = true;
        }
        1 => {
            head.push_str("content-length: nope\r\n");
            may_drop = true;
        }
        2 => {
            head.push_str("transfer-encoding: chunked\r\n");
            may_drop = true;
        }
        _ => head.push_str(&format!("content-length: {}\r\n", body.len())),
    }
    head.push_str("connection: close\r\n\r\n");
    let mut raw = head.into_bytes();
    if framing == 2 {
        raw.extend_from_slice(format!("{:x}\r\n", body.len() + 3).as_bytes());
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
    } else {
        raw.extend_from_slice(&body);
    }
    if rng.chance(3) {
        // A broken request line or header block.
        raw = rng
            .pick(&[
                &b"\x00\x01\x02 / HTTP/1.1\r\n\r\n"[..],
                b"GET /health HTTP/9.9\r\n\r\n",
                b"GET\r\n\r\n",
                b"GET /health HTTP/1.1\r\nno-colon-header\r\n\r\n",
                b"GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                b"POST /runs HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            ])
            .to_vec();
        may_drop = true;
    }
    Generated { raw, may_drop }
}

/// Sends `raw` on a fresh connection; returns the status and the head plus up to 64 KiB of
/// the body (an SSE stream never ends, so reading stops there or after a pause).
async fn send(addr: SocketAddr, raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A write may fail when the server answers early and closes (e.g. 413).
    let _ = stream.write_all(raw).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    let line = got.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, got))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_requests_get_no_5xx_and_leak_nothing() {
    let server = Server::idle().await;
    let secret = format!("TOP-SECRET-{:x}", SEED);
    let secret_path = server.repo.root().join("secret.txt");
    std::fs::write(&secret_path, format!("{secret}\n{secret}=1\n")).expect("secret");
    let known = server
        .client
        .create_run(&server.request())
        .await
        .expect("create")
        .run;
    let world = std::sync::Arc::new(World {
        addr: server.addr,
        workspace: server.repo.path().display().to_string(),
        known_id: known.id.to_string(),
        secret_path: secret_path.display().to_string(),
    });
    // The traversal cases by hand first, so each is sure to be sent at least once.
    let auth = format!("Bearer {TOKEN}");
    for route in ["/runs", "/prompt"] {
        for (field, value) in [
            ("spec_path", world.secret_path.clone()),
            ("spec_path", "../secret.txt".to_owned()),
            ("plan_path", "specs/../../secret.txt".to_owned()),
            ("config_file", world.secret_path.clone()),
            ("config_file", "/etc/passwd".to_owned()),
            ("cwd", "/etc".to_owned()),
            ("cwd", world.secret_path.clone()),
            ("workspace_root", "/etc".to_owned()),
        ] {
            let mut body = serde_json::json!({
                "spec_path": "specs/widget.md",
                "workspace_root": world.workspace,
            });
            body[field] = serde_json::json!(value);
            if field == "cwd" {
                // Relative to that directory the spec would be a file outside the workspace.
                body["spec_path"] = serde_json::json!(if value == "/etc" {
                    "passwd"
                } else {
                    "secret.txt"
                });
            }
            let (status, _, bytes) = server
                .raw(
                    "POST",
                    route,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    Some(serde_json::to_vec(&body).expect("json")),
                )
                .await;
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                status.is_client_error(),
                "{route} {field}={value}: {status} {text}"
            );
            assert!(
                !text.contains(&secret) && !text.contains("root:x:0:0"),
                "{route} {field}={value} leaked: {text}"
            );
        }
    }
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let world = world.clone();
        let secret = secret.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(SEED ^ (w + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut counts = std::collections::BTreeMap::<u16, usize>::new();
            let mut dropped = 0;
            for i in 0..PER_WORKER {
                let g = generate(&mut rng, &world);
                match send(world.addr, &g.raw).await {
                    Some((code, body)) => {
                        let text = String::from_utf8_lossy(&body);
                        assert!(
                            code < 500 || code == 503,
                            "worker {w} request {i} got {code}:\n{}\n---\n{text}",
                            String::from_utf8_lossy(&g.raw[..g.raw.len().min(2000)])
                        );
                        assert!(
                            !text.contains(&secret) && !text.contains("root:x:0:0"),
                            "worker {w} request {i} leaked a file outside the workspace:\n{}\n---\n{text}",
                            String::from_utf8_lossy(&g.raw[..g.raw.len().min(2000)])
                        );
                        *counts.entry(code).or_default() += 1;
                    }
                    None => {
                        assert!(
                            g.may_drop,
                            "worker {w} request {i} got no answer:\n{}",
                            String::from_utf8_lossy(&g.raw[..g.raw.len().min(2000)])
                        );
                        dropped += 1;
                    }
                }
            }
            (counts, dropped)
        }));
    }
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    let mut dropped = 0;
    for w in workers {
        let (c, d) = w.await.expect("worker");
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
        dropped += d;
    }
    let total: usize = counts.values().sum::<usize>() + dropped;
    eprintln!(
        "fuzz: {total} requests in {:?}: {counts:?}, {dropped} dropped without an answer",
        started.elapsed()
    );
    assert!(total >= 10_000);
    // Many kinds of answers were exercised, not just one refusal.
    for code in [200, 201, 400, 401, 404] {
        assert!(counts.get(&code).copied().unwrap_or(0) > 0, "{counts:?}");
    }
    // Still serving, healthy, and the server task is alive.
    let health = server.client.health().await.expect("health");
    assert_eq!(health.status, "ok");
    assert!(!server.serve.as_ref().expect("serve").is_finished());
    // No run was created from outside the workspace.
    let runs = server
        .engine
        .list_runs(&RunFilter::default())
        .await
        .expect("runs");
    for run in &runs {
        assert!(run.spec_path.starts_with(server.repo.path()), "{run:?}");
        assert!(run.plan_path.starts_with(server.repo.path()), "{run:?}");
        assert_eq!(run.workspace_root, server.repo.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_do_not_stop_the_server() {
    let server = Server::idle().await;
    // 64 connections that send a partial header block and then trickle.
    let mut slow = Vec::new();
    for i in 0..64 {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(
            format!(
                "GET /runs HTTP/1.1\r\nhost: {}\r\nx-slow-{i}: ",
                server.addr
            )
            .as_bytes(),
        )
        .await
        .expect("partial header");
        slow.push(s);
    }
    for round in 0..5 {
        for s in &mut slow {
            let _ = s.write_all(b"a").await;
        }
        let started = std::time::Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(5), server.client.health())
            .await
            .expect("health answers while slow clients hang")
            .expect("health");
        assert_eq!(health.status, "ok", "round {round}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .client
        .list_runs(&Default::default())
        .await
        .expect("authed routes still answer");
}
