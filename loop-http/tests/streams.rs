//! The SSE streams: events from creation to completion, resuming with `Last-Event-ID`, live
//! output, keep-alives and shutdown.

use std::time::Duration;

use loop_engine::domain::RunStatus;
use loop_http::client::{ApiEvent, EventStream, OutputItem, OutputStream};

use crate::support::{Server, Setup, TOKEN, code, message};

const LIMIT: Duration = Duration::from_secs(60);

async fn all_events(stream: &mut EventStream) -> Vec<ApiEvent> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(LIMIT, stream.next()).await {
            Ok(Ok(Some(e))) => out.push(e),
            Ok(Ok(None)) => return out,
            Ok(Err(e)) => panic!("event stream failed: {e}"),
            Err(_) => panic!("event stream did not end; got {:?}", kinds(&out)),
        }
    }
}

async fn all_output(stream: &mut OutputStream) -> Vec<OutputItem> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(LIMIT, stream.next()).await {
            Ok(Ok(Some(i))) => out.push(i),
            Ok(Ok(None)) => return out,
            Ok(Err(e)) => panic!("output stream failed: {e}"),
            Err(_) => panic!("output stream did not end; got {out:?}"),
        }
    }
}

fn kinds(events: &[ApiEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn text(items: &[OutputItem]) -> String {
    items
        .iter()
        .filter_map(|i| match i {
            OutputItem::Chunk { text, .. } => Some(text.as_str()),
            OutputItem::Step { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_events_and_output_to_completion() {
    let server = Server::with(Setup {
        agent_delay: Duration::from_millis(150),
        ..Setup::default()
    })
    .await;
    let created = server
        .client
        .create_run(&server.request())
        .await
        .expect("create");
    let id = created.run.id;
    assert_eq!(created.run.status, RunStatus::Pending);
    assert_eq!(created.run.tasks_total, 3);
    let mut output = server.client.output(id).await.expect("output stream");
    let mut events = server.client.events(id, None).await.expect("event stream");

    let events = all_events(&mut events).await;
    let k = kinds(&events);
    assert_eq!(k.first(), Some(&"RUN_CREATED"), "{k:?}");
    assert_eq!(k.last(), Some(&"RUN_COMPLETED"), "{k:?}");
    assert!(
        k.contains(&"RUN_STARTED") && k.contains(&"STEP_STARTED"),
        "{k:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0].data["run_id"], id.to_string());
    assert_eq!(events[0].data["payload"]["name"], "widget");

    let items = all_output(&mut output).await;
    assert!(
        matches!(items.first(), Some(OutputItem::Step { .. })),
        "{items:?}"
    );
    let text = text(&items);
    assert!(text.contains("Completed Task number 1."), "{text}");
    assert!(text.contains("<promise>COMPLETE</promise>"), "{text}");
    let steps_seen = items
        .iter()
        .filter(|i| matches!(i, OutputItem::Step { .. }))
        .count();
    assert!(steps_seen >= 3, "{items:?}");

    let run = server.client.get_run(id).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.exit_reason.as_deref(), Some("complete_plan"));
    assert_eq!(run.tasks_done, 3);
    assert!(run.last_step.is_some());
    assert!(run.created_at.ends_with('Z'));

    let metrics = server.client.metrics().await.expect("metrics");
    assert!(
        metrics.contains("loop_runs{status=\"COMPLETED\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("loop_runs{status=\"FAILED\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("loop_run_duration_ms_count 1\n"),
        "{metrics}"
    );

    // The step log of an agent step holds its answer, streamed from disk.
    let steps = server.client.steps(id).await.expect("steps");
    let agent = steps
        .iter()
        .find(|s| s.phase == "implementation" && s.output_path.is_some())
        .expect("an implementation step with a log");
    let log = server.client.step_log(id, agent.seq).await.expect("log");
    assert!(String::from_utf8_lossy(&log).contains("Completed Task number"));
    let artifacts = server.client.artifacts(id).await.expect("artifacts");
    assert!(
        artifacts.iter().any(|a| a.kind == "report"),
        "{artifacts:?}"
    );

    // The output of a finished run is its last logged step, then the end.
    let mut late = server.client.output(id).await.expect("output stream");
    let late = all_output(&mut late).await;
    assert!(
        super_text_contains(&late, "<promise>COMPLETE</promise>"),
        "{late:?}"
    );
}

fn super_text_contains(items: &[OutputItem], needle: &str) -> bool {
    text(items).contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_last_event_id_returns_exactly_the_rest() {
    let server = Server::start().await;
    let id = server.queued_run().await;
    server.wait_status(id, RunStatus::Completed).await;
    let full = all_events(&mut server.client.events(id, None).await.expect("events")).await;
    let n = full.len() as u64;
    assert!(n > 4, "{:?}", kinds(&full));
    for k in [1, n / 2, n - 1] {
        let rest = all_events(&mut server.client.events(id, Some(k)).await.expect("events")).await;
        assert_eq!(rest, full[k as usize..].to_vec(), "after {k}");
    }
    // Resuming after the final event ends at once, with nothing.
    let started = tokio::time::Instant::now();
    let none = all_events(&mut server.client.events(id, Some(n)).await.expect("events")).await;
    assert!(none.is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
    // `?after=` works like the header.
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = server
        .raw(
            "GET",
            &format!("/runs/{id}/events?after={}", n - 1),
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with(&format!("id: {n}\nevent: RUN_COMPLETED\ndata: {{")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_last_event_ids_are_refused() {
    let server = Server::idle().await;
    let id = server.queued_run().await;
    let auth = format!("Bearer {TOKEN}");
    let path = format!("/runs/{id}/events");
    let (status, _, body) = server
        .raw(
            "GET",
            &path,
            &[("authorization", &auth), ("last-event-id", "abc")],
            None,
        )
        .await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(message(&json).contains("`abc`"), "{json}");
    let (status, _, body) = server
        .raw(
            "GET",
            &path,
            &[("authorization", &auth), ("last-event-id", "99")],
            None,
        )
        .await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let msg = message(&json);
    assert!(msg.contains("99") && msg.contains("last event 1"), "{msg}");
    assert_eq!(code(&json), "bad_request");
    let e = server
        .client
        .events(id, Some(2))
        .await
        .expect_err("too large");
    assert!(
        matches!(e, loop_http::ClientError::Api { status: 400, .. }),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_send_keepalives_and_end_when_the_run_ends() {
    let server = Server::with(Setup {
        scheduler: false,
        keepalive: Duration::from_millis(100),
        ..Setup::default()
    })
    .await;
    let id = server.queued_run().await;
    let mut events = server.client.events(id, None).await.expect("events");
    let mut output = server.client.output(id).await.expect("output");
    let first = events.next().await.expect("event").expect("an event");
    assert_eq!(first.kind, "RUN_CREATED");
    // Nothing happens to a pending run without a scheduler: only keep-alives arrive.
    assert!(
        tokio::time::timeout(Duration::from_millis(450), events.next())
            .await
            .is_err()
    );
    assert!(
        events.keepalives() >= 2,
        "{} keep-alives",
        events.keepalives()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(250), output.next())
            .await
            .is_err()
    );
    assert!(output.keepalives() >= 1);
    server.client.cancel(id).await.expect("cancel");
    let rest = all_events(&mut events).await;
    assert_eq!(
        kinds(&rest).last(),
        Some(&"RUN_CANCELED"),
        "{:?}",
        kinds(&rest)
    );
    assert_eq!(events.last_event_id(), rest.last().map(|e| e.seq));
    // The output stream notices the end at its next keep-alive.
    let items = all_output(&mut output).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_the_server() {
    let mut server = Server::idle().await;
    let id = server.queued_run().await;
    let mut events = server.client.events(id, None).await.expect("events");
    assert_eq!(events.next().await.expect("event").expect("one").seq, 1);
    server.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends on shutdown");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    let serve = server.serve.take().expect("serve task");
    tokio::time::timeout(Duration::from_secs(8), serve)
        .await
        .expect("serve returns")
        .expect("serve task")
        .expect("serve ok");
    let e = server.client.health().await.expect_err("no server");
    assert!(matches!(e, loop_http::ClientError::Connect { .. }), "{e}");
}
