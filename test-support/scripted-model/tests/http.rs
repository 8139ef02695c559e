//! The server's answers over HTTP: streamed and plain messages, errors, slow and stalled
//! streams, tool-call continuations, the other routes, and the request record.

use std::time::{Duration, Instant};

use scripted_model::{ModelServer, Script, ToolCall, Turn, When};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, post, request_bytes, send, sse_events};

fn body(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "stream": stream,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    })
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn streamed_and_plain_text() {
    let server = ModelServer::start(
        Script::always(Turn::Text("fallback".into())).then(Turn::Text("Hello there.".into())),
    )
    .unwrap();
    let res = post(server.addr(), &body("hi", true)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let events = res.events();
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["model"], "claude-test");
    assert_eq!(events[0].1["message"]["id"], "msg_sm_1");
    assert_eq!(events[2].1["delta"]["text"], "Hello there.");
    assert_eq!(events[4].1["delta"]["stop_reason"], "end_turn");
    assert!(events[4].1["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The queue is used up: the fallback answers, here without streaming.
    let plain = post(server.addr(), &body("again", false)).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-type"), Some("application/json"));
    let message = plain.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "fallback");
    assert_eq!(message["stop_reason"], "end_turn");

    let recorded = server.messages_requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].number, Some(1));
    assert_eq!(recorded[0].path, "/v1/messages?beta=true");
    assert_eq!(recorded[0].header("x-api-key"), Some("test"));
    assert_eq!(recorded[0].answer, "text");
    assert_eq!(recorded[1].messages().unwrap().prompt(), "again");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_carry_status_type_and_retry_after() {
    let server = ModelServer::start(
        Script::always(Turn::Text("ok".into()))
            .then(Turn::Error {
                status: 429,
                body: None,
                retry_after: Some(7),
            })
            .then(Turn::Error {
                status: 529,
                body: None,
                retry_after: None,
            })
            .then(Turn::Error {
                status: 401,
                body: None,
                retry_after: None,
            })
            .then(Turn::Error {
                status: 500,
                body: Some(json!({"custom": true})),
                retry_after: None,
            }),
    )
    .unwrap();
    let limited = post(server.addr(), &body("a", true)).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let overloaded = post(server.addr(), &body("a", true)).await;
    assert_eq!(overloaded.status, 529);
    assert_eq!(overloaded.header("retry-after"), None);
    assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");
    let refused = post(server.addr(), &body("a", false)).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let custom = post(server.addr(), &body("a", true)).await;
    assert_eq!(custom.status, 500);
    assert_eq!(custom.json(), json!({"custom": true}));
    assert_eq!(post(server.addr(), &body("a", true)).await.status, 200);
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        ["error 429", "error 529", "error 401", "error 500", "text"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn slow_answers_pace_their_deltas() {
    let server = ModelServer::start(Script::always(Turn::Slow {
        chunks: vec!["one ".into(), "two ".into(), "three".into()],
        delay: Duration::from_millis(150),
    }))
    .unwrap();
    let started = Instant::now();
    let res = post(server.addr(), &body("hi", true)).await;
    assert!(started.elapsed() >= Duration::from_millis(450));
    let deltas: Vec<String> = res
        .events()
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, ["one ", "two ", "three"]);

    let started = Instant::now();
    let plain = post(server.addr(), &body("hi", false)).await;
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(plain.json()["content"][0]["text"], "one two three");
    server.shutdown().await;
}

#[tokio::test]
async fn stall_sends_message_start_then_nothing_until_shutdown() {
    let server = ModelServer::start(Script::always(Turn::Stall)).unwrap();
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(&request_bytes(
            "POST",
            "/v1/messages",
            &body("hi", true).to_string(),
        ))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("message_stop")
        && !String::from_utf8_lossy(&got).contains("\n\n\r\n")
    {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("message_start in time")
            .unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body_part = client::dechunk(text.split_once("\r\n\r\n").unwrap().1);
    let events = sse_events(&body_part);
    assert_eq!(names(&events), ["message_start"]);
    // Nothing more comes, and the connection stays open.
    let more = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await;
    assert!(more.is_err(), "the stream stays silent");

    server.shutdown().await;
    // Shutdown closes the stalled connection.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed by shutdown");
}

#[tokio::test]
async fn tool_calls_then_their_continuation() {
    let script = Script::always(Turn::Text("unused".into())).then(Turn::ToolUse {
        calls: vec![
            ToolCall::bash("echo hi"),
            ToolCall {
                name: "Write".into(),
                input: json!({"file_path": "/tmp/x", "content": "x"}),
            },
        ],
        then: Some("All done.".into()),
    });
    let server = ModelServer::start(script).unwrap();
    let first = post(server.addr(), &body("go", true)).await;
    let events = first.events();
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["content_block"]["type"], "tool_use");
    assert_eq!(starts[0]["content_block"]["name"], "Bash");
    assert_eq!(starts[1]["content_block"]["name"], "Write");
    let id = starts[0]["content_block"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let input = events
        .iter()
        .find(|(n, d)| n == "content_block_delta" && d["index"] == 0)
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap()["command"],
        "echo hi"
    );
    let stop = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(stop.1["delta"]["stop_reason"], "tool_use");

    // The CLI sends the results back: the continuation answers, the queue is not touched.
    let follow_up = json!({
        "model": "claude-test",
        "stream": true,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "hi"}]}
        ]
    });
    let second = post(server.addr(), &follow_up).await;
    let text = second
        .events()
        .into_iter()
        .find(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].clone())
        .unwrap();
    assert_eq!(text, "All done.");
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(answers, ["tool_use(Bash,Write)", "continuation"]);
    server.shutdown().await;
}

#[tokio::test]
async fn rules_answer_matching_requests_first() {
    let script = Script::always(Turn::Text("plain".into()))
        .rule(When::Naming, Turn::Text("widget maker".into()), None)
        .rule(
            When::RequestContains("verification failed".into()),
            Turn::Text("fixing".into()),
            Some(1),
        );
    let server = ModelServer::start(script).unwrap();
    let text_of = |v: Value| v["content"][0]["text"].as_str().unwrap().to_owned();
    let naming = body(
        "Give a short, memorable label for a coding run that implements the specification below.",
        false,
    );
    assert_eq!(
        text_of(post(server.addr(), &naming).await.json()),
        "widget maker"
    );
    let notes = json!({"model": "m", "messages": [
        {"role": "user", "content": "<system-reminder>\n# TOP PRIORITY: verification failed\n</system-reminder>"},
        {"role": "user", "content": "@specs/w.md\nimplement"}
    ]});
    assert_eq!(text_of(post(server.addr(), &notes).await.json()), "fixing");
    // Used up after one match.
    assert_eq!(text_of(post(server.addr(), &notes).await.json()), "plain");
    server.shutdown().await;
}

#[tokio::test]
async fn other_routes() {
    let server = ModelServer::start(Script::default()).unwrap();
    let addr = server.addr();
    let head = send(addr, "HEAD", "/", "").await;
    assert_eq!(head.status, 200);
    let count = send(
        addr,
        "POST",
        "/v1/messages/count_tokens?beta=true",
        &body("hello", false).to_string(),
    )
    .await;
    assert_eq!(count.status, 200);
    assert!(count.json()["input_tokens"].as_u64().unwrap() > 0);
    let models = send(addr, "GET", "/v1/models", "").await;
    assert_eq!(models.json()["data"][0]["type"], "model");
    let telemetry = send(addr, "POST", "/api/event_logging/batch", "{}").await;
    assert_eq!(telemetry.status, 200);
    let missing = send(addr, "GET", "/nope", "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["type"], "not_found_error");
    let bad = send(addr, "POST", "/v1/messages", "{not json").await;
    assert_eq!(bad.status, 400);
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(
        answers,
        ["health", "count_tokens", "models", "ignored", "404", "400"]
    );
    // Neither count_tokens nor a body that is not JSON counts as a model request.
    assert!(server.messages_requests().is_empty());
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    server.shutdown().await;
}
