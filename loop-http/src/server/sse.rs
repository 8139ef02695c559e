//! Server-sent event streams: a run's structured events (`/runs/{id}/events`) and its live agent
//! output (`/runs/{id}/output`).
//!
//! Each stream is a producer task writing frames into a bounded channel that feeds the response
//! body. The producers never lose or repeat anything: they subscribe to the engine's live
//! channel before reading the store (or the log file), skip what they already sent and fill
//! any gap (a lagging receiver, out-of-order publishing) from durable storage. A client that
//! stops reading is dropped after a few seconds (see [`Sink`]); it resumes with `Last-Event-ID`.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use loop_engine::Engine;
use loop_engine::domain::{Event, EventKind, RunId, StepId};
use loop_engine::engine::{CurrentOutput, LiveOutput};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{EventResource, StepMarker};
use crate::error::chain;

/// Frames buffered between a producer and the response body.
pub(crate) const FRAME_CAPACITY: usize = 256;
/// Events read from the store per page during a replay.
const PAGE: u32 = 500;
/// Bytes of replayed frames sent at once.
const REPLAY_CHUNK: usize = 64 * 1024;
/// Bytes read from a log file per frame.
const FILE_CHUNK: usize = 64 * 1024;
/// After the run is seen terminal without its final event, how long to wait for that event.
const TERMINAL_GRACE: Duration = Duration::from_secs(2);

/// Timing of a stream.
#[derive(Clone, Debug)]
pub(crate) struct SseSettings {
    /// A comment is sent after this long without a frame.
    pub(crate) keepalive: Duration,
    /// Ends the stream when the server shuts down.
    pub(crate) shutdown: CancellationToken,
}

/// Why a producer stops early.
enum Stop {
    /// The client went away or stopped reading.
    Client,
    /// The store failed; the client reconnects later.
    Store,
}

/// The writing end of a stream.
pub(crate) struct Sink {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    stall: Duration,
}

impl Sink {
    pub(crate) fn new(tx: mpsc::Sender<Result<Bytes, io::Error>>, stall: Duration) -> Self {
        Self { tx, stall }
    }

    async fn send(&self, frame: String) -> Result<(), Stop> {
        self.tx
            .send_timeout(Ok(Bytes::from(frame)), self.stall)
            .await
            .map_err(|_| Stop::Client)
    }

    async fn keepalive(&self) -> Result<(), Stop> {
        self.send(": keep-alive\n\n".to_owned()).await
    }
}

/// The SSE frame of a stored event.
pub(crate) fn event_frame(e: &Event) -> String {
    let data = serde_json::to_string(&EventResource::from(e)).unwrap_or_else(|_| "{}".to_owned());
    format!("id: {}\nevent: {}\ndata: {data}\n\n", e.seq, e.kind)
}

fn is_terminal_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::RunCompleted | EventKind::RunFailed | EventKind::RunCanceled
    )
}

/// State of an event stream.
struct EventCursor<'a> {
    engine: &'a Engine,
    run_id: RunId,
    sink: &'a Sink,
    /// Highest sequence number sent.
    last: u64,
    /// A terminal event was sent: nothing follows it.
    finished: bool,
}

impl EventCursor<'_> {
    async fn send(&mut self, e: &Event) -> Result<(), Stop> {
        self.sink.send(event_frame(e)).await?;
        self.last = e.seq;
        if is_terminal_kind(e.kind) {
            self.finished = true;
        }
        Ok(())
    }

    /// Sends every stored event after `last`.
    async fn replay(&mut self) -> Result<(), Stop> {
        loop {
            let page = self
                .engine
                .events_after(self.run_id, self.last, PAGE)
                .await
                .map_err(|e| {
                    tracing::warn!(run_id = %self.run_id, error = %chain(&e), "cannot read events for a stream; ending it");
                    Stop::Store
                })?;
            let full = page.len() == PAGE as usize;
            // Frames of a page go out in chunks of up to REPLAY_CHUNK bytes, not one by one:
            // every send is a hand-over to the connection's task, and replaying 10,000 events
            // one frame at a time spent most of its time in those hand-overs.
            let mut chunk = String::new();
            for e in &page {
                if e.seq > self.last {
                    chunk.push_str(&event_frame(e));
                    self.last = e.seq;
                    if is_terminal_kind(e.kind) {
                        self.finished = true;
                    }
                    if chunk.len() >= REPLAY_CHUNK {
                        self.sink.send(std::mem::take(&mut chunk)).await?;
                    }
                }
            }
            if !chunk.is_empty() {
                self.sink.send(chunk).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn run_is_terminal(&self) -> Result<bool, Stop> {
        match self.engine.get_run(self.run_id).await {
            Ok(run) => Ok(run.status.is_terminal()),
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %chain(&e), "cannot read a streamed run; ending the stream");
                Err(Stop::Store)
            }
        }
    }

    /// True when the event numbered `last` ends the run.
    async fn last_sent_is_terminal(&self) -> Result<bool, Stop> {
        let events = self
            .engine
            .events_after(self.run_id, self.last - 1, 1)
            .await
            .map_err(|e| {
                tracing::warn!(run_id = %self.run_id, error = %chain(&e), "cannot read events for a stream; ending it");
                Stop::Store
            })?;
        Ok(events
            .first()
            .is_some_and(|e| e.seq == self.last && is_terminal_kind(e.kind)))
    }
}

/// Streams the events of `run_id` after `after` into `sink` until the run is terminal.
/// `rx` must have been subscribed before the caller read anything from the store.
pub(crate) async fn events(
    engine: Engine,
    run_id: RunId,
    after: u64,
    rx: broadcast::Receiver<Event>,
    sink: Sink,
    settings: SseSettings,
) {
    let mut cur = EventCursor {
        engine: &engine,
        run_id,
        sink: &sink,
        last: after,
        finished: false,
    };
    // Ending quietly is right for both reasons: the client is gone, or it reconnects.
    let _ = stream_events(&mut cur, rx, &settings).await;
}

async fn stream_events(
    cur: &mut EventCursor<'_>,
    mut rx: broadcast::Receiver<Event>,
    settings: &SseSettings,
) -> Result<(), Stop> {
    cur.replay().await?;
    if !cur.finished && cur.last > 0 {
        // A client resuming right after the final event gets nothing new, and is done.
        cur.finished = cur.last_sent_is_terminal().await?;
    }
    if cur.finished {
        return Ok(());
    }
    // The run may be terminal with its final event about to be written (the engine records the
    // status first): wait a little for it, then end with whatever the store holds.
    let mut terminal_deadline = if cur.run_is_terminal().await? {
        Some(Instant::now() + TERMINAL_GRACE)
    } else {
        None
    };
    let idle = tokio::time::sleep(settings.keepalive);
    tokio::pin!(idle);
    loop {
        let deadline = async {
            match terminal_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = settings.shutdown.cancelled() => return Ok(()),
            received = rx.recv() => {
                match received {
                    Ok(e) if e.seq <= cur.last => continue,
                    // Publishing order can differ from sequence order when two tasks append at
                    // once: fill the gap from the store (which holds `e` already).
                    Ok(e) if e.seq > cur.last + 1 => cur.replay().await?,
                    Ok(e) => cur.send(&e).await?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(run_id = %cur.run_id, missed, "event stream lagged; re-reading the store");
                        cur.replay().await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // The engine dropped the run's channel (the run ended).
                        cur.replay().await?;
                        if cur.finished || cur.run_is_terminal().await? {
                            return Ok(());
                        }
                        rx = cur.engine.subscribe_events(cur.run_id);
                        cur.replay().await?;
                    }
                }
                if cur.finished {
                    return Ok(());
                }
                idle.as_mut().reset(Instant::now() + settings.keepalive);
            }
            () = &mut idle => {
                cur.sink.keepalive().await?;
                idle.as_mut().reset(Instant::now() + settings.keepalive);
                if terminal_deadline.is_none() && cur.run_is_terminal().await? {
                    terminal_deadline = Some(Instant::now() + TERMINAL_GRACE);
                }
            }
            () = deadline => {
                cur.replay().await?;
                return Ok(());
            }
        }
    }
}

/// The output of one step being streamed.
struct StepCursor {
    step_id: StepId,
    log_path: Option<PathBuf>,
    /// Bytes of the log (from its start) sent so far, including `carry`.
    sent: u64,
    /// Trailing bytes of an incomplete UTF-8 character, held for the next chunk.
    carry: Vec<u8>,
}

/// State of an output stream.
struct OutputCursor<'a> {
    engine: &'a Engine,
    run_id: RunId,
    sink: &'a Sink,
    step: Option<StepCursor>,
}

/// The SSE frame of a piece of output text: one `data:` line per line of text. A lone `\r`
/// (progress bars) counts as a line break because SSE cannot carry it.
fn output_frame(step_id: StepId, offset: u64, text: &str) -> String {
    let mut frame = format!("id: {step_id}:{offset}\nevent: output\n");
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        frame.push_str("data: ");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    frame
}

impl OutputCursor<'_> {
    /// Starts streaming `step_id`: finishes the previous step and sends a step marker.
    async fn start(&mut self, step_id: StepId, log_path: Option<PathBuf>) -> Result<(), Stop> {
        self.finish_step().await?;
        let log_path = match log_path {
            Some(p) => Some(p),
            None => match self.engine.store().get_step(step_id).await {
                Ok(step) => step.output_path,
                Err(e) => {
                    tracing::debug!(run_id = %self.run_id, %step_id, error = %chain(&e), "no log path for a streamed step");
                    None
                }
            },
        };
        let marker = serde_json::to_string(&StepMarker { step_id }).unwrap_or_default();
        self.sink
            .send(format!("id: {step_id}:0\nevent: step\ndata: {marker}\n\n"))
            .await?;
        self.step = Some(StepCursor {
            step_id,
            log_path,
            sent: 0,
            carry: Vec::new(),
        });
        Ok(())
    }

    /// Sends the rest of the current step's log (everything after what was sent) and any held
    /// partial character.
    async fn finish_step(&mut self) -> Result<(), Stop> {
        self.copy_file(None).await?;
        if let Some(step) = &mut self.step
            && !step.carry.is_empty()
        {
            let offset = step.sent - step.carry.len() as u64;
            let text = String::from_utf8_lossy(&step.carry).into_owned();
            step.carry.clear();
            let frame = output_frame(step.step_id, offset, &text);
            self.sink.send(frame).await?;
        }
        Ok(())
    }

    /// Sends bytes of the current step's log from what was sent up to `until` (or its end).
    /// A missing or short file is not an error: the live chunks carry the same bytes.
    async fn copy_file(&mut self, until: Option<u64>) -> Result<(), Stop> {
        let Some(step) = &self.step else {
            return Ok(());
        };
        let Some(path) = step.log_path.clone() else {
            return Ok(());
        };
        let mut file = match open_at(&path, step.sent).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(run_id = %self.run_id, path = %path.display(), error = %e, "cannot read a step log for a stream");
                return Ok(());
            }
        };
        let mut buf = vec![0u8; FILE_CHUNK];
        loop {
            let sent = self.step.as_ref().map_or(0, |s| s.sent);
            let want = match until {
                Some(u) if u <= sent => return Ok(()),
                Some(u) => usize::try_from(u - sent)
                    .unwrap_or(FILE_CHUNK)
                    .min(FILE_CHUNK),
                None => FILE_CHUNK,
            };
            let n = match file.read(&mut buf[..want]).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(run_id = %self.run_id, path = %path.display(), error = %e, "step log read failed mid-stream");
                    return Ok(());
                }
            };
            self.emit(sent, &buf[..n]).await?;
        }
    }

    /// Sends `data`, which starts at byte `offset` of the current step's log. Bytes already
    /// sent are skipped.
    async fn emit(&mut self, offset: u64, data: &[u8]) -> Result<(), Stop> {
        let Some(step) = &mut self.step else {
            return Ok(());
        };
        let end = offset + data.len() as u64;
        if end <= step.sent {
            return Ok(());
        }
        let skip = usize::try_from(step.sent.saturating_sub(offset)).unwrap_or(data.len());
        let new = &data[skip..];
        let start = step.sent - step.carry.len() as u64;
        let mut bytes = std::mem::take(&mut step.carry);
        bytes.extend_from_slice(new);
        step.sent = end;
        // Hold back an incomplete character at the end so it is not split into two
        // replacement characters.
        let keep = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => incomplete_tail_start(&bytes),
        };
        step.carry = bytes.split_off(keep);
        if bytes.is_empty() {
            return Ok(());
        }
        let frame = output_frame(step.step_id, start, &String::from_utf8_lossy(&bytes));
        self.sink.send(frame).await
    }

    /// Handles one live chunk.
    async fn live(&mut self, chunk: LiveOutput) -> Result<(), Stop> {
        if self.step.as_ref().map(|s| s.step_id) != Some(chunk.step_id) {
            self.start(chunk.step_id, None).await?;
        }
        let sent = self.step.as_ref().map_or(0, |s| s.sent);
        if chunk.offset > sent {
            // Chunks were missed (a lag): the log file holds them.
            self.copy_file(Some(chunk.offset)).await?;
            if let Some(step) = &mut self.step
                && step.sent < chunk.offset
            {
                tracing::debug!(run_id = %self.run_id, step_id = %step.step_id, from = step.sent, to = chunk.offset, "output gap not in the log file; skipping it");
                step.sent = chunk.offset;
                step.carry.clear();
            }
        }
        self.emit(chunk.offset, &chunk.data).await
    }

    async fn run_is_terminal(&self) -> Result<bool, Stop> {
        match self.engine.get_run(self.run_id).await {
            Ok(run) => Ok(run.status.is_terminal()),
            Err(e) => {
                tracing::warn!(run_id = %self.run_id, error = %chain(&e), "cannot read a streamed run; ending the stream");
                Err(Stop::Store)
            }
        }
    }

    /// For a run that already ended: the output of its last step that has a log.
    async fn send_last_step(&mut self) -> Result<(), Stop> {
        let steps = self.engine.steps(self.run_id).await.map_err(|e| {
            tracing::warn!(run_id = %self.run_id, error = %chain(&e), "cannot list steps for a stream");
            Stop::Store
        })?;
        if let Some(step) = steps.iter().rev().find(|s| s.output_path.is_some()) {
            self.start(step.id, step.output_path.clone()).await?;
            self.finish_step().await?;
        }
        Ok(())
    }
}

/// Where an invalid byte sequence is not followed by a valid suffix: the start of a trailing
/// incomplete character, or the end.
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    // A UTF-8 character is at most 4 bytes; look for a lead byte among the last 3.
    for back in 1..=3.min(bytes.len()) {
        let i = bytes.len() - back;
        let b = bytes[i];
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue,
            _ => return bytes.len(),
        };
        return if back < need { i } else { bytes.len() };
    }
    bytes.len()
}

async fn open_at(path: &Path, offset: u64) -> io::Result<tokio::fs::File> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(SeekFrom::Start(offset)).await?;
    Ok(f)
}

/// Streams the live agent output of `run_id` into `sink` until the run is terminal: the current
/// step's log from its start, then live chunks.
pub(crate) async fn output(
    engine: Engine,
    run_id: RunId,
    rx: broadcast::Receiver<LiveOutput>,
    current: Option<CurrentOutput>,
    sink: Sink,
    settings: SseSettings,
) {
    let mut cur = OutputCursor {
        engine: &engine,
        run_id,
        sink: &sink,
        step: None,
    };
    let _ = stream_output(&mut cur, rx, current, &settings).await;
}

async fn stream_output(
    cur: &mut OutputCursor<'_>,
    mut rx: broadcast::Receiver<LiveOutput>,
    current: Option<CurrentOutput>,
    settings: &SseSettings,
) -> Result<(), Stop> {
    match current {
        Some(c) => {
            cur.start(c.step_id, Some(c.log_path)).await?;
            cur.copy_file(None).await?;
        }
        None => {
            if cur.run_is_terminal().await? {
                return cur.send_last_step().await;
            }
            if !cur.engine.running_runs().contains(&cur.run_id) && cur.engine.store_is_shared() {
                return follow_remote(cur, settings).await;
            }
        }
    }
    let idle = tokio::time::sleep(settings.keepalive);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            () = settings.shutdown.cancelled() => return Ok(()),
            received = rx.recv() => {
                match received {
                    Ok(chunk) => cur.live(chunk).await?,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // The next chunk's offset shows the gap, and it is filled from the log.
                        tracing::debug!(run_id = %cur.run_id, missed, "output stream lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        cur.finish_step().await?;
                        if cur.run_is_terminal().await? {
                            return Ok(());
                        }
                        let (next_rx, current) = cur.engine.subscribe_output(cur.run_id);
                        rx = next_rx;
                        if let Some(c) = current
                            && cur.step.as_ref().map(|s| s.step_id) != Some(c.step_id)
                        {
                            cur.start(c.step_id, Some(c.log_path)).await?;
                            cur.copy_file(None).await?;
                        }
                    }
                }
                idle.as_mut().reset(Instant::now() + settings.keepalive);
            }
            () = &mut idle => {
                cur.sink.keepalive().await?;
                idle.as_mut().reset(Instant::now() + settings.keepalive);
                if cur.run_is_terminal().await? {
                    cur.finish_step().await?;
                    return Ok(());
                }
            }
        }
    }
}

/// How often the log of a run executing on another host is read for new bytes.
const REMOTE_TAIL: Duration = Duration::from_millis(250);

/// The output of a run that executes on another host sharing the store (SPEC §14). The agent
/// writes its output to the step's log in the run's folder on the workspaces' shared
/// filesystem, which this host sees at the same path: the stream follows the run's newest
/// step that has a log and sends what the file gained, every [`REMOTE_TAIL`]. (Output is not
/// copied through the database, which would carry every byte twice and grow with it, and not
/// proxied from the owner, which would make a stream depend on a second host staying up. A
/// shared filesystem gives no change notification across hosts, hence the short re-read.)
async fn follow_remote(cur: &mut OutputCursor<'_>, settings: &SseSettings) -> Result<(), Stop> {
    let mut idle_since = Instant::now();
    loop {
        let steps = cur.engine.steps(cur.run_id).await.map_err(|e| {
            tracing::warn!(run_id = %cur.run_id, error = %chain(&e), "cannot list steps for a stream");
            Stop::Store
        })?;
        if let Some(step) = steps.iter().rev().find(|s| s.output_path.is_some())
            && cur.step.as_ref().map(|s| s.step_id) != Some(step.id)
        {
            cur.start(step.id, step.output_path.clone()).await?;
            idle_since = Instant::now();
        }
        let before = cur.step.as_ref().map_or(0, |s| s.sent);
        cur.copy_file(None).await?;
        if cur.step.as_ref().map_or(0, |s| s.sent) != before {
            idle_since = Instant::now();
        }
        if cur.run_is_terminal().await? {
            cur.finish_step().await?;
            return Ok(());
        }
        if idle_since.elapsed() >= settings.keepalive {
            cur.sink.keepalive().await?;
            idle_since = Instant::now();
        }
        tokio::select! {
            () = settings.shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(REMOTE_TAIL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_engine::backend::OutputStream;
    use loop_engine::impls::MemoryStore;

    fn engine() -> Engine {
        Engine::builder().store(MemoryStore::new()).build().unwrap()
    }

    fn drain(rx: &mut mpsc::Receiver<Result<Bytes, io::Error>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(String::from_utf8(item.unwrap().to_vec()).unwrap());
        }
        out
    }

    fn chunk(step_id: StepId, offset: u64, data: &[u8]) -> LiveOutput {
        LiveOutput {
            step_id,
            offset,
            stream: OutputStream::Stdout,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[tokio::test]
    async fn a_stalled_client_is_dropped() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = Sink::new(tx, Duration::from_millis(30));
        assert!(sink.send("a".into()).await.is_ok());
        let started = std::time::Instant::now();
        assert!(matches!(sink.send("b".into()).await, Err(Stop::Client)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn output_gaps_are_filled_from_the_log_and_repeats_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("iter.log");
        std::fs::write(&log, "hello world\n").unwrap();
        let engine = engine();
        let (tx, mut rx) = mpsc::channel(64);
        let sink = Sink::new(tx, Duration::from_secs(1));
        let mut cur = OutputCursor {
            engine: &engine,
            run_id: RunId::new(),
            sink: &sink,
            step: None,
        };
        let step = StepId::new();
        cur.start(step, Some(log.clone())).await.ok().unwrap();
        // A chunk past what was sent: the missing bytes come from the file first.
        cur.live(chunk(step, 6, b"world\n")).await.ok().unwrap();
        // A repeat of bytes already sent is skipped; an overlap sends only the new part.
        cur.live(chunk(step, 0, b"hello ")).await.ok().unwrap();
        cur.live(chunk(step, 6, b"world\nmore")).await.ok().unwrap();
        let frames = drain(&mut rx);
        assert_eq!(
            frames,
            vec![
                format!("id: {step}:0\nevent: step\ndata: {{\"step_id\":\"{step}\"}}\n\n"),
                format!("id: {step}:0\nevent: output\ndata: hello \n\n"),
                format!("id: {step}:6\nevent: output\ndata: world\ndata: \n\n"),
                format!("id: {step}:12\nevent: output\ndata: more\n\n"),
            ]
        );
    }

    #[tokio::test]
    async fn a_character_split_across_chunks_arrives_whole() {
        let engine = engine();
        let (tx, mut rx) = mpsc::channel(64);
        let sink = Sink::new(tx, Duration::from_secs(1));
        let mut cur = OutputCursor {
            engine: &engine,
            run_id: RunId::new(),
            sink: &sink,
            step: None,
        };
        let step = StepId::new();
        let euro = "€".as_bytes();
        cur.start(step, None).await.ok().unwrap();
        cur.live(chunk(step, 0, &[b"a", &euro[..1]].concat()))
            .await
            .ok()
            .unwrap();
        cur.live(chunk(step, 2, &euro[1..])).await.ok().unwrap();
        let next = StepId::new();
        // A dangling partial character is flushed (lossily) when its step ends.
        cur.live(chunk(step, 4, &euro[..2])).await.ok().unwrap();
        cur.live(chunk(next, 0, b"x")).await.ok().unwrap();
        let frames = drain(&mut rx);
        assert_eq!(frames.len(), 6, "{frames:?}");
        assert!(
            frames[1].ends_with(":0\nevent: output\ndata: a\n\n"),
            "{}",
            frames[1]
        );
        assert!(
            frames[2].ends_with(":1\nevent: output\ndata: €\n\n"),
            "{}",
            frames[2]
        );
        assert!(
            frames[3].ends_with(":4\nevent: output\ndata: \u{FFFD}\n\n"),
            "{}",
            frames[3]
        );
        assert!(frames[4].contains("event: step"));
        assert!(frames[5].ends_with(&format!("id: {next}:0\nevent: output\ndata: x\n\n")));
    }

    #[test]
    fn output_frames_split_lines_into_data_fields() {
        let id = StepId::new();
        let frame = output_frame(id, 7, "one\r\ntwo\rthree\n");
        assert_eq!(
            frame,
            format!("id: {id}:7\nevent: output\ndata: one\ndata: two\ndata: three\ndata: \n\n")
        );
    }

    #[test]
    fn incomplete_tail_is_found() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut bytes = b"ab\xff".to_vec();
        bytes.extend_from_slice(&euro[..2]);
        assert_eq!(incomplete_tail_start(&bytes), 3);
        assert_eq!(incomplete_tail_start(b"ab\xff"), 3);
        assert_eq!(incomplete_tail_start(b"abc"), 3);
    }
}
