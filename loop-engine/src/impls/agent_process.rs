//! Running one agent process under the [`Executor`](crate::backend::Executor) contract, shared
//! by the Claude and command executors and public as [`run_agent`] for custom executors:
//! spawning it, streaming its output to the log and to followers, watching the timeouts and the
//! cancel token, and stopping it together with everything it started.
//!
//! Memory stays bounded whatever the agent prints: output is handled chunk by chunk, only short
//! tails are kept, and of the line being assembled for the stream-json parser at most
//! [`LINE_CAP`] bytes are kept (and only for lines that can be JSON objects).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::time::Instant;

use crate::backend::{
    AgentResult, ExecContext, ExecOutcome, ExecRequest, ExecSignal, ExecutorError, OutputChunk,
    OutputStream, Termination,
};
use crate::impls::stream_json::{StreamLine, parse_line};
use crate::process::{
    self, AgentCgroup, Cmd, INTERRUPT_GRACE, KILL_GRACE, ProcessTree, Signal, TIMEOUT_EXIT_CODE,
};

/// Exit code reported for an agent stopped by the cancel token (as a shell reports SIGINT).
pub(crate) const CANCEL_EXIT_CODE: i32 = 130;
/// How much of the end of stdout is kept for plain-text completion detection.
pub(crate) const STDOUT_TAIL: usize = 64 * 1024;
/// How much of the end of stderr is kept for error messages.
pub(crate) const STDERR_TAIL: usize = 8 * 1024;
/// The longest line kept for the stream-json parser; longer lines are not parsed.
pub(crate) const LINE_CAP: usize = 4 * 1024 * 1024;
/// The environment variable that marks every process of one agent invocation, so its orphans
/// can be recognised after their parents died.
pub(crate) const MARKER_KEY: &str = "LOOP_AGENT_MARKER";

const READ_CHUNK: usize = 64 * 1024;
/// How often the agent's process tree is re-read while it runs, to remember descendants
/// before their parents die and their parent links break.
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// How long after a clean exit the background sweep for leftovers outside the agent's group
/// waits (see `run_agent`).
const SWEEP_AFTER_EXIT: Duration = Duration::from_millis(20);
/// How long the pipes may stay open after the agent and its leftovers are gone (held by a
/// process we could not find) before reading stops.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Where a missing agent program is configured, and what to do about it: the `key` and `hint`
/// of the [`ExecutorError::NotFound`] that [`run_agent`] returns when the program cannot be
/// started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramKey {
    /// The config key (or other setting) that names the program, e.g. `claude_bin`.
    pub key: &'static str,
    /// What to do about it, e.g. `install the CLI or set claude_bin to its path`.
    pub hint: &'static str,
}

/// The outcome plus what the tests need to check that memory stayed bounded.
#[derive(Debug)]
pub(crate) struct AgentRun {
    pub(crate) outcome: ExecOutcome,
    /// The most bytes held at once in tails and the line buffer (fixed read buffers excluded).
    pub(crate) peak_retained: usize,
}

/// How long the end of a call waits for a killed cgroup to empty (SIGKILL is delivered
/// asynchronously; a process in uninterruptible sleep dies when it wakes).
const CGROUP_EMPTY_WAIT: Duration = Duration::from_secs(10);

/// Kills the agent's whole tree when the future running it is dropped before the end.
struct KillGuard {
    tree: ProcessTree,
    /// The agent's cgroup, where agents are contained by cgroup.
    cgroup: Option<Arc<AgentCgroup>>,
    armed: bool,
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match &self.cgroup {
            Some(cg) => {
                let adopted = process::adopt(&cg.pids());
                cg.kill();
                // Removed once empty, where a runtime is at hand; else recovery finds it.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let cg = Arc::clone(cg);
                    rt.spawn(async move {
                        cg.wait_empty(CGROUP_EMPTY_WAIT).await;
                        process::reap_adopted(&adopted);
                        cg.remove();
                    });
                }
            }
            None => self.tree.kill_now(),
        }
    }
}

/// The last `cap` bytes of a stream.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// Whether anything before `buf` was dropped (its start may split a character).
    cut: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            cut: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if data.len() >= self.cap {
            self.cut |= data.len() > self.cap || !self.buf.is_empty();
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            return;
        }
        self.buf.extend_from_slice(data);
        // Trimming only past twice the cap keeps the copying amortised.
        if self.buf.len() > 2 * self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.cut = true;
        }
    }

    fn retained(&self) -> usize {
        self.buf.capacity()
    }

    fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(self.cap);
        let mut kept = &self.buf[start..];
        if start > 0 || self.cut {
            // Do not start with the broken remains of a multi-byte character.
            while kept.first().is_some_and(|b| b & 0xC0 == 0x80) {
                kept = &kept[1..];
            }
        }
        String::from_utf8_lossy(kept).into_owned()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    /// Nothing but whitespace seen on this line yet.
    Start,
    /// The line starts with `{`: kept for the parser.
    Keep,
    /// The line cannot be a JSON object: not kept.
    Skip,
    /// The line grew past [`LINE_CAP`]: dropped.
    TooLong,
}

/// Splits stdout into lines for the stream-json parser, keeping at most the current line (and
/// of it at most [`LINE_CAP`] bytes).
#[derive(Debug)]
struct LineSplitter {
    cur: Vec<u8>,
    state: LineState,
    cap: usize,
}

impl LineSplitter {
    fn new(cap: usize) -> Self {
        Self {
            cur: Vec::new(),
            state: LineState::Start,
            cap,
        }
    }

    fn feed(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.absorb(&data[..i]);
                    self.end_line(on_line);
                    data = &data[i + 1..];
                }
                None => {
                    self.absorb(data);
                    data = &[];
                }
            }
        }
    }

    fn absorb(&mut self, mut part: &[u8]) {
        if self.state == LineState::Start {
            let Some(first) = part.iter().position(|b| !b.is_ascii_whitespace()) else {
                return;
            };
            part = &part[first..];
            self.state = if part[0] == b'{' {
                LineState::Keep
            } else {
                LineState::Skip
            };
        }
        if self.state == LineState::Keep {
            if self.cur.len() + part.len() > self.cap {
                self.state = LineState::TooLong;
                self.cur = Vec::new();
            } else {
                let needed = self.cur.len() + part.len();
                if needed > self.cur.capacity() {
                    // Grow by doubling, but never past the cap (plain doubling could reach
                    // almost twice the cap).
                    let target = (self.cur.capacity() * 2).max(needed).min(self.cap);
                    self.cur.reserve_exact(target - self.cur.len());
                }
                self.cur.extend_from_slice(part);
            }
        }
    }

    /// Ends the current line (at a newline or at the end of the stream).
    fn end_line(&mut self, on_line: &mut impl FnMut(&[u8])) {
        if self.state == LineState::Keep {
            on_line(&self.cur);
        }
        self.cur.clear();
        // One long line should not pin its buffer for the rest of the run.
        if self.cur.capacity() > 1024 * 1024 {
            self.cur = Vec::new();
        }
        self.state = LineState::Start;
    }

    fn retained(&self) -> usize {
        self.cur.capacity()
    }
}

/// Everything learnt from the output so far.
struct Collector<'a> {
    req: &'a ExecRequest,
    ctx: &'a ExecContext,
    log: BufWriter<File>,
    log_error: Option<io::Error>,
    stdout_tail: Tail,
    stderr_tail: Tail,
    lines: LineSplitter,
    reader: Box<dyn StreamReader + 'a>,
    bytes: u64,
    line_count: u64,
    /// Per stream: whether the last byte seen was a newline (or nothing was seen).
    at_line_start: [bool; 2],
    peak_retained: usize,
}

impl Collector<'_> {
    async fn chunk(&mut self, stream: OutputStream, data: &[u8]) {
        if self.log_error.is_none() {
            // Flushing every chunk keeps the log current for `tail -f` and for a crash.
            let written = async {
                self.log.write_all(data).await?;
                self.log.flush().await
            };
            if let Err(e) = written.await {
                self.log_error = Some(e);
            }
        }
        // No receivers is normal (nobody follows the output).
        let _ = self.ctx.output.send(OutputChunk {
            step_id: self.req.step_id,
            offset: self.bytes,
            stream,
            data: Bytes::copy_from_slice(data),
        });
        self.bytes += data.len() as u64;
        self.line_count += data.iter().filter(|b| **b == b'\n').count() as u64;
        let idx = stream_index(stream);
        if let Some(last) = data.last() {
            self.at_line_start[idx] = *last == b'\n';
        }
        match stream {
            OutputStream::Stdout => {
                self.stdout_tail.push(data);
                let (reader, ctx) = (&mut self.reader, self.ctx);
                self.lines.feed(data, &mut |line| reader.line(line, ctx));
            }
            OutputStream::Stderr => self.stderr_tail.push(data),
        }
        self.peak_retained = self
            .peak_retained
            .max(self.stdout_tail.retained() + self.stderr_tail.retained() + self.lines.retained());
    }

    /// The stream ended: its last line counts even without a newline.
    fn eof(&mut self, stream: OutputStream) {
        let idx = stream_index(stream);
        if !self.at_line_start[idx] {
            self.line_count += 1;
            self.at_line_start[idx] = true;
        }
        if stream == OutputStream::Stdout {
            let (reader, ctx) = (&mut self.reader, self.ctx);
            self.lines.end_line(&mut |line| reader.line(line, ctx));
        }
    }
}

fn stream_index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// Reads one agent CLI's stdout, line by line (each line that starts with `{`, without its
/// newline): what it learns becomes the outcome's final result, and live facts (API retries)
/// are sent on the context's signals. Each CLI's output format has its own reader.
pub(crate) trait StreamReader: Send {
    /// One line of stdout that may be a JSON object.
    fn line(&mut self, line: &[u8], ctx: &ExecContext);
    /// The final result, once stdout ended.
    fn finish(&mut self) -> Option<AgentResult>;
}

/// The Claude CLI's stream-json: the `result` line is the result; the `init` line names the
/// model when the result does not.
#[derive(Debug, Default)]
pub(crate) struct ClaudeStream {
    result: Option<AgentResult>,
    init_model: Option<String>,
    /// The reset time (Unix seconds) of the last rejected rate limit the session reported.
    limit_resets_at: Option<i64>,
}

impl StreamReader for ClaudeStream {
    fn line(&mut self, line: &[u8], ctx: &ExecContext) {
        match parse_line(line) {
            StreamLine::Result(mut r) => {
                // The result line may not name the model; the session's init line did.
                if r.usage.model.is_none() {
                    r.usage.model = self.init_model.clone();
                }
                // Nor when a usage limit resets: the rate-limit event before it did.
                if r.usage_limit_resets_at.is_none() {
                    r.usage_limit_resets_at = self.limit_resets_at;
                }
                self.result = Some(r);
            }
            StreamLine::RateLimit(info) => {
                if info.is_rejected() && info.resets_at.is_some() {
                    self.limit_resets_at = info.resets_at;
                }
            }
            // A malformed result line is no verdict, and it cancels an earlier one: the agent's
            // last word is what counts (a CLI exiting 0 after it gave no valid result).
            StreamLine::MalformedResult { problem } => {
                tracing::debug!(%problem, "agent printed a malformed result line");
                self.result = None;
            }
            StreamLine::Init { model } => self.init_model = model,
            StreamLine::ApiRetry(retry) => {
                // The engine may have stopped listening; the retry is in the log anyway.
                let _ = ctx.signals.send(retry.into());
            }
            StreamLine::Other { .. } | StreamLine::Raw => {}
        }
    }

    fn finish(&mut self) -> Option<AgentResult> {
        self.result.take()
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => Ok(0),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stops processes; gives back the updated tree (process-group containment) or nothing
/// (cgroup containment).
type StopFuture = Pin<Box<dyn Future<Output = Option<ProcessTree>> + Send>>;

fn fatal(detail: String, source: Option<io::Error>) -> ExecutorError {
    ExecutorError::Fatal {
        detail,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

fn spawn_error(program: &str, key: ProgramKey, e: io::Error) -> ExecutorError {
    use nix::errno::Errno;
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => ExecutorError::NotFound {
            program: program.to_owned(),
            key: key.key.to_owned(),
            hint: key.hint.to_owned(),
        },
        _ if [Errno::EAGAIN, Errno::ENOMEM, Errno::EMFILE, Errno::ENFILE]
            .iter()
            .any(|errno| e.raw_os_error() == Some(*errno as i32)) =>
        {
            ExecutorError::Retryable(Box::new(e))
        }
        _ => fatal(format!("cannot start `{program}`"), Some(e)),
    }
}

/// Runs `cmd` as the agent of `req`, keeping every part of the
/// [`Executor`](crate::backend::Executor) contract that concerns the process:
///
/// - the output is written to `req.log_path` as it arrives and published on `ctx.output` with
///   its byte offsets, in bounded memory whatever the agent prints;
/// - `req.timeout` and `req.idle_timeout` stop it (exit code 124, [`Termination::TimedOut`] /
///   [`Termination::IdleTimedOut`]); `ctx.cancel` stops it promptly (exit code 130,
///   [`Termination::Canceled`]); dropping the future stops it too;
/// - stopping means the whole process tree: its group, and descendants that left the group
///   (`setsid`), found by an environment marker; leftovers of a normal exit are stopped as well;
/// - [`ExecSignal::Spawned`] is sent with the pid, and stream-json `api_retry` lines become
///   [`ExecSignal::ApiRetry`];
/// - stdout is parsed as stream-json where it is JSON: a `result` line fills
///   [`ExecOutcome::result`], and `output_text` is its text, else the end of stdout.
///
/// `cmd` is the command line only (program, arguments, extra environment, stdin bytes);
/// `req.env` is added to it, and `req.workdir` must exist. `program` names the setting to
/// blame when the program cannot be found.
///
/// # Errors
/// [`ExecutorError::NotFound`] when the program does not exist, [`ExecutorError::Retryable`]
/// when the system is out of processes or memory, [`ExecutorError::Fatal`] when the log cannot
/// be written or the working directory does not exist.
pub async fn run_agent(
    cmd: Cmd,
    program: ProgramKey,
    req: &ExecRequest,
    ctx: &ExecContext,
) -> Result<ExecOutcome, ExecutorError> {
    run_measured(cmd, program, req, ctx)
        .await
        .map(|run| run.outcome)
}

/// [`run_agent`], also reporting how much memory the output handling retained.
pub(crate) async fn run_measured(
    cmd: Cmd,
    key: ProgramKey,
    req: &ExecRequest,
    ctx: &ExecContext,
) -> Result<AgentRun, ExecutorError> {
    run_reading(cmd, key, req, ctx, Box::new(ClaudeStream::default())).await
}

/// [`run_measured`] with `reader` reading the agent's stdout (its CLI's output format).
pub(crate) async fn run_reading(
    mut cmd: Cmd,
    key: ProgramKey,
    req: &ExecRequest,
    ctx: &ExecContext,
    reader: Box<dyn StreamReader + '_>,
) -> Result<AgentRun, ExecutorError> {
    let program = cmd.program().to_string_lossy().into_owned();
    if !req.workdir.is_dir() {
        return Err(fatal(
            format!(
                "working directory {} does not exist or is not a directory",
                req.workdir.display()
            ),
            None,
        ));
    }
    let log_error = |e| {
        fatal(
            format!("cannot write the agent log {}", req.log_path.display()),
            Some(e),
        )
    };
    // Created in place: a hop to the blocking pool costs more than these two calls.
    if let Some(dir) = req.log_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(log_error)?;
    }
    // Private to the owner: the agent may print secrets.
    let file = File::from_std(
        crate::artifacts::private_options()
            .create(true)
            .truncate(true)
            .open(&req.log_path)
            .map_err(log_error)?,
    );

    let marker_value = uuid::Uuid::now_v7().to_string();
    // Never the daemon's whole environment: its token would end up in the agent's log.
    cmd = cmd.allowed_env_only().env(MARKER_KEY, &marker_value);
    for (k, v) in &req.env {
        cmd = cmd.env(k, v);
    }
    // One cgroup per invocation, where the host allows: the agent is started through a
    // shim that enters it before exec'ing the agent (see `process::cgroup`).
    let cgroup_name = process::agent_cgroup_name(
        &req.run_id.to_string(),
        &req.step_id.to_string(),
        marker_value.rsplit('-').next().unwrap_or(&marker_value),
    );
    let cgroup = AgentCgroup::create(&cgroup_name, &req.limits)
        .map_err(|e| {
            fatal(
                format!("cannot create the agent's cgroup {cgroup_name}"),
                Some(e),
            )
        })?
        .map(Arc::new);
    if let Some(cg) = &cgroup {
        // The shim would only report a missing program as exit code 127.
        if !cmd.program_found() {
            cg.remove();
            return Err(spawn_error(
                &program,
                key,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        cmd = cmd.through_shim(cg.shim_args());
    }
    // The agent dies with the daemon (SPEC §14).
    let mut cmd = cmd.dying_with_parent();
    let mut command = cmd.to_tokio();
    let input = cmd.take_stdin();
    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            if let Some(cg) = &cgroup {
                cg.remove();
            }
            return Err(spawn_error(&program, key, e));
        }
    };
    let Some(pid) = child.id() else {
        return Err(fatal(format!("`{program}` exited before it started"), None));
    };
    let start_time = process::process_start_time(pid);
    let mut guard = KillGuard {
        tree: ProcessTree::with_start(pid, start_time)
            .with_marker(format!("{MARKER_KEY}={marker_value}"))
            .spawned_here(),
        cgroup: cgroup.clone(),
        armed: true,
    };
    // Tells a stop in progress that the agent itself has exited.
    let (exited_tx, exited_rx) = tokio::sync::watch::channel(false);
    let watch_limits = cgroup.is_some() && !req.limits.is_empty();
    // The engine may not listen (one-off calls); the pid is only needed for crash recovery.
    let _ = ctx.signals.send(ExecSignal::Spawned { pid, start_time });

    let mut stdin = child.stdin.take();
    let feed = async move {
        if let (Some(pipe), Some(bytes)) = (stdin.as_mut(), input) {
            // An agent that exits without reading its input is not an error of ours.
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        }
        drop(stdin);
    };
    tokio::pin!(feed);
    let mut fed = false;

    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_open = stdout.is_some();
    let mut err_open = stderr.is_some();
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK / 4];
    let mut sink = Collector {
        req,
        ctx,
        log: BufWriter::with_capacity(READ_CHUNK, file),
        log_error: None,
        stdout_tail: Tail::new(STDOUT_TAIL),
        stderr_tail: Tail::new(STDERR_TAIL),
        lines: LineSplitter::new(LINE_CAP),
        reader,
        bytes: 0,
        line_count: 0,
        at_line_start: [true, true],
        peak_retained: 0,
    };

    let deadline = req.timeout.map(|t| started + t);
    let mut last_output = started;
    let mut status: Option<ExitStatus> = None;
    let mut stopped_by: Option<Termination> = None;
    let mut stop: Option<StopFuture> = None;
    let mut limit_stopped = false;
    let mut leftovers_swept = false;
    let mut drain_deadline: Option<Instant> = None;
    // No read of `/proc` at the start: the agent has not forked anything yet.
    let mut refresh = tokio::time::interval_at(started + REFRESH_EVERY, REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if status.is_some() && stop.is_none() {
            if !leftovers_swept {
                // Whatever the agent left behind (background jobs, setsid'ed tools) must not
                // outlive the call; this also releases pipes they hold.
                leftovers_swept = true;
                if let Some(cg) = &cgroup {
                    // Whatever is left in the cgroup is a leftover: one read says whether
                    // anything is.
                    if cg.populated() {
                        stop = Some(kill_cgroup(Arc::clone(cg)));
                    }
                    continue;
                }
                let mut tree = guard.tree.clone();
                if tree.group_gone_and_nothing_seen() {
                    // The usual end: the group is empty and no descendant was ever seen. Only
                    // a tool that left the group (setsid) can remain; it is looked for, and
                    // stopped, off the path to the next agent call. One holding our pipes is
                    // also caught by the drain below.
                    tokio::spawn(async move {
                        // After the next agent call has started: its start is what counts now.
                        tokio::time::sleep(SWEEP_AFTER_EXIT).await;
                        tree.stop_leftovers().await;
                    });
                    continue;
                }
                stop = Some(Box::pin(async move {
                    tree.stop_leftovers().await;
                    Some(tree)
                }));
                continue;
            }
            if !out_open && !err_open {
                break;
            }
            if drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
        }
        if stopped_by.is_none() && sink.log_error.is_some() {
            stopped_by = Some(Termination::Canceled);
            stop = Some(stop_future(&guard, pid, &exited_rx));
            continue;
        }
        let running = status.is_none() && stopped_by.is_none();
        let idle_at = req.idle_timeout.map(|t| last_output + t);
        let stopping = stop.is_some();
        let draining = status.is_some() && leftovers_swept && !stopping;
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled(), if running => {
                stopped_by = Some(Termination::Canceled);
                stop = Some(stop_future(&guard, pid, &exited_rx));
            }
            () = sleep_until(deadline), if running && deadline.is_some() => {
                stopped_by = Some(Termination::TimedOut);
                stop = Some(stop_future(&guard, pid, &exited_rx));
            }
            () = sleep_until(idle_at), if running && idle_at.is_some() => {
                stopped_by = Some(Termination::IdleTimedOut);
                stop = Some(stop_future(&guard, pid, &exited_rx));
            }
            read = read_some(stdout.as_mut(), &mut out_buf), if out_open => match read {
                Ok(n) if n > 0 => {
                    last_output = Instant::now();
                    sink.chunk(OutputStream::Stdout, &out_buf[..n]).await;
                }
                // EOF, or a broken pipe: either way nothing more comes from it.
                _ => {
                    out_open = false;
                    sink.eof(OutputStream::Stdout);
                }
            },
            read = read_some(stderr.as_mut(), &mut err_buf), if err_open => match read {
                Ok(n) if n > 0 => {
                    last_output = Instant::now();
                    sink.chunk(OutputStream::Stderr, &err_buf[..n]).await;
                }
                _ => {
                    err_open = false;
                    sink.eof(OutputStream::Stderr);
                }
            },
            exited = child.wait(), if status.is_none() => match exited {
                Ok(s) => {
                    status = Some(s);
                    // Nobody may be waiting for it.
                    let _ = exited_tx.send(true);
                }
                Err(e) => return Err(fatal(format!("cannot wait for `{program}`"), Some(e))),
            },
            tree = async { match stop.as_mut() { Some(f) => f.await, None => std::future::pending().await } }, if stopping => {
                if let Some(tree) = tree {
                    guard.tree = tree;
                }
                stop = None;
            }
            () = &mut feed, if !fed => fed = true,
            _ = refresh.tick(), if (cgroup.is_some() && ((running && watch_limits) || draining)) || (cgroup.is_none() && (running || draining)) => {
                if let Some(cg) = &cgroup {
                    if draining {
                        if cg.populated() {
                            stop = Some(kill_cgroup(Arc::clone(cg)));
                        }
                    } else if !limit_stopped && cg.limit_hit().is_some() {
                        // A fork loop or a memory hog: the whole agent is stopped, and the step
                        // fails with the limit as its reason.
                        limit_stopped = true;
                        stop = Some(kill_cgroup(Arc::clone(cg)));
                    }
                } else if draining {
                    // Something still holds the pipes: a leftover the sweep could not see yet
                    // (caught between fork and exec, say). Look again.
                    if guard.tree.any_alive() {
                        guard.tree.kill_now();
                    }
                    guard.tree.reap();
                } else {
                    guard.tree.refresh();
                }
            }
            () = sleep_until(drain_deadline), if drain_deadline.is_some() && !stopping => break,
            else => break,
        }
    }
    guard.armed = false;
    let resources = match &cgroup {
        Some(cg) => {
            let usage = cg.usage();
            if cg.populated() {
                // Something still held our pipes past the drain: it must not outlive the call.
                let adopted = process::adopt(&cg.pids());
                cg.kill();
                cg.wait_empty(CGROUP_EMPTY_WAIT).await;
                process::reap_adopted(&adopted);
            }
            cg.remove();
            Some(usage)
        }
        None => {
            guard.tree.reap();
            None
        }
    };
    drop(stdout);
    drop(stderr);
    if out_open {
        sink.eof(OutputStream::Stdout);
    }
    if err_open {
        sink.eof(OutputStream::Stderr);
    }
    if let Some(e) = sink.log_error.take() {
        return Err(log_error(e));
    }
    sink.log.shutdown().await.map_err(log_error)?;

    let (exit_code, termination) = match (stopped_by, status) {
        (Some(t @ (Termination::TimedOut | Termination::IdleTimedOut)), _) => {
            (TIMEOUT_EXIT_CODE, t)
        }
        (Some(t), _) => (CANCEL_EXIT_CODE, t),
        (None, Some(s)) if limit_stopped && s.success() => (128 + 9, Termination::Signaled),
        (None, Some(s)) => {
            use std::os::unix::process::ExitStatusExt;
            let t = if s.signal().is_some() {
                Termination::Signaled
            } else {
                Termination::Exited
            };
            (process::exit_code_of(s), t)
        }
        (None, None) => (-1, Termination::Exited),
    };
    let result = sink.reader.finish();
    let output_text = match &result {
        Some(r) => r.text.clone(),
        None => sink.stdout_tail.text(),
    };
    let outcome = ExecOutcome {
        exit_code,
        termination: Some(termination),
        result,
        output_text,
        stderr_tail: sink.stderr_tail.text(),
        output_bytes: sink.bytes,
        output_lines: sink.line_count,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        resources,
    };
    Ok(AgentRun {
        outcome,
        peak_retained: sink.peak_retained,
    })
}

/// The stop of a cancel or timeout: SIGINT to the agent's group (the Claude CLI then stops
/// its tools), SIGTERM after [`INTERRUPT_GRACE`], then everything is killed: the cgroup
/// with `cgroup.kill` after [`KILL_GRACE`] more, or, without a cgroup, the group and every
/// descendant found in `/proc`.
fn stop_future(
    guard: &KillGuard,
    pid: u32,
    exited: &tokio::sync::watch::Receiver<bool>,
) -> StopFuture {
    match &guard.cgroup {
        Some(cg) => {
            let cg = Arc::clone(cg);
            let mut exited = exited.clone();
            Box::pin(async move {
                process::signal_group(pid, Signal::Interrupt);
                if !wait_exited(&mut exited, INTERRUPT_GRACE).await {
                    process::signal_group(pid, Signal::Terminate);
                    wait_exited(&mut exited, KILL_GRACE).await;
                }
                kill_cgroup(cg).await
            })
        }
        None => {
            let mut tree = guard.tree.clone();
            Box::pin(async move {
                tree.stop(INTERRUPT_GRACE).await;
                Some(tree)
            })
        }
    }
}

/// Waits up to `limit` for the agent itself to exit; true when it did.
async fn wait_exited(exited: &mut tokio::sync::watch::Receiver<bool>, limit: Duration) -> bool {
    tokio::time::timeout(limit, exited.wait_for(|e| *e))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Kills everything in the agent's cgroup and waits until it is empty, reaping those of its
/// processes that were re-parented to us.
fn kill_cgroup(cg: Arc<AgentCgroup>) -> StopFuture {
    Box::pin(async move {
        let adopted = process::adopt(&cg.pids());
        cg.kill();
        cg.wait_empty(CGROUP_EMPTY_WAIT).await;
        process::reap_adopted(&adopted);
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ExecPurpose;
    use crate::domain::{RunId, StepId};
    use crate::process::proc_stat;
    use std::path::Path;
    use tokio::sync::mpsc::UnboundedReceiver;
    use tokio_util::sync::CancellationToken;

    const KEY: ProgramKey = ProgramKey {
        key: "test_cmd",
        hint: "test",
    };

    /// The two huge-output tests measure this process's memory: they must not overlap.
    static HUGE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn request(dir: &Path) -> ExecRequest {
        ExecRequest {
            run_id: RunId::new(),
            step_id: StepId::new(),
            purpose: ExecPurpose::Implementation,
            label: "1".into(),
            prompt: String::new(),
            model: "m".into(),
            workdir: dir.to_owned(),
            log_path: dir.join("iter-01.log"),
            timeout: Some(Duration::from_secs(60)),
            idle_timeout: None,
            env: Vec::new(),
            limits: Default::default(),
        }
    }

    fn context() -> (
        ExecContext,
        UnboundedReceiver<ExecSignal>,
        CancellationToken,
    ) {
        let cancel = CancellationToken::new();
        let (output, _) = tokio::sync::broadcast::channel(16);
        let (signals, rx) = tokio::sync::mpsc::unbounded_channel();
        let ctx = ExecContext {
            output,
            signals,
            cancel: cancel.clone(),
        };
        (ctx, rx, cancel)
    }

    async fn run_sh(script: &str, req: &ExecRequest, ctx: &ExecContext) -> AgentRun {
        let cmd = Cmd::new("sh", &req.workdir).args(["-c", script]);
        run_measured(cmd, KEY, req, ctx).await.unwrap()
    }

    fn spawned_pid(rx: &mut UnboundedReceiver<ExecSignal>) -> u32 {
        match rx.try_recv() {
            Ok(ExecSignal::Spawned { pid, start_time }) => {
                assert!(start_time.is_some());
                pid
            }
            other => panic!("expected Spawned, got {other:?}"),
        }
    }

    /// Waits (up to 3 s) until `pid` has no live process, and says whether it got there.
    async fn dies(pid: u32) -> bool {
        for _ in 0..150 {
            if proc_stat(pid).is_none_or(|p| !p.is_alive()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits (up to 3 s) until `pid` does not exist at all (reaped, not even a zombie).
    async fn vanishes(pid: u32) -> bool {
        for _ in 0..150 {
            if proc_stat(pid).is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn read_pid(path: &Path) -> u32 {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no pid in {}", path.display());
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Samples VmRSS until `stop` is set; returns the highest value seen.
    fn sample_rss(
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut peak = rss_kib();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_kib())
        })
    }

    #[tokio::test]
    async fn timeout_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        req.timeout = Some(Duration::from_millis(300));
        let (ctx, mut rx, _) = context();
        let started = std::time::Instant::now();
        let run = run_sh("echo started; sleep 300 & sleep 300", &req, &ctx).await;
        assert_eq!(run.outcome.exit_code, TIMEOUT_EXIT_CODE);
        assert_eq!(run.outcome.termination, Some(Termination::TimedOut));
        assert_eq!(run.outcome.output_text, "started\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = spawned_pid(&mut rx);
        assert!(!process::group_alive(pid));
        assert!(dies(pid).await);
    }

    #[tokio::test]
    async fn the_init_line_names_the_model_when_the_result_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let run = run_sh(
            r#"echo '{"type":"system","subtype":"init","model":"claude-opus-4-5"}'; echo '{"type":"result","is_error":false,"result":"done"}'"#,
            &req,
            &ctx,
        )
        .await;
        let result = run.outcome.result.expect("a result");
        assert_eq!(result.usage.model.as_deref(), Some("claude-opus-4-5"));
        // The result line's own model wins.
        let run = run_sh(
            r#"echo '{"type":"system","subtype":"init","model":"a"}'; echo '{"type":"result","result":"done","modelUsage":{"b":{"costUSD":1}}}'"#,
            &req,
            &ctx,
        )
        .await;
        let result = run.outcome.result.expect("a result");
        assert_eq!(result.usage.model.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        req.idle_timeout = Some(Duration::from_millis(400));
        let (ctx, _rx, _) = context();
        // Output every 100 ms keeps it alive; the silence afterwards does not.
        let run = run_sh(
            "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.1; done; sleep 300",
            &req,
            &ctx,
        )
        .await;
        assert_eq!(run.outcome.exit_code, TIMEOUT_EXIT_CODE);
        assert_eq!(run.outcome.termination, Some(Termination::IdleTimedOut));
        assert!(run.outcome.output_text.contains("tick 6"));
        assert!(
            run.outcome.duration_ms >= 900,
            "{}",
            run.outcome.duration_ms
        );
    }

    #[tokio::test]
    async fn cancel_stops_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, mut rx, cancel) = context();
        let started = std::time::Instant::now();
        let (run, ()) = tokio::join!(run_sh("sleep 300", &req, &ctx), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        assert_eq!(run.outcome.exit_code, CANCEL_EXIT_CODE);
        assert_eq!(run.outcome.termination, Some(Termination::Canceled));
        // SIGINT ends `sh` and `sleep` at once: no escalation needed.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(dies(spawned_pid(&mut rx)).await);
    }

    const GRANDCHILD: &str = "setsid sleep 300 & echo $! > gc.pid; echo spawned";

    #[tokio::test]
    async fn setsid_grandchild_is_killed_after_timeout() {
        process::become_child_subreaper().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut req = request(dir.path());
        req.timeout = Some(Duration::from_millis(500));
        let (ctx, _rx, _) = context();
        let run = run_sh(&format!("{GRANDCHILD}; sleep 300"), &req, &ctx).await;
        assert_eq!(run.outcome.termination, Some(Termination::TimedOut));
        let gc = read_pid(&dir.path().join("gc.pid")).await;
        assert!(
            vanishes(gc).await,
            "grandchild {gc} survived: {:?}",
            proc_stat(gc)
        );
    }

    #[tokio::test]
    async fn setsid_grandchild_is_killed_after_cancel() {
        process::become_child_subreaper().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, cancel) = context();
        let gc_file = dir.path().join("gc.pid");
        let script = format!("{GRANDCHILD}; sleep 300");
        let (run, gc) = tokio::join!(run_sh(&script, &req, &ctx), async {
            let gc = read_pid(&gc_file).await;
            cancel.cancel();
            gc
        });
        assert_eq!(run.outcome.termination, Some(Termination::Canceled));
        assert!(
            vanishes(gc).await,
            "grandchild {gc} survived: {:?}",
            proc_stat(gc)
        );
    }

    #[tokio::test]
    async fn leftovers_of_a_normal_exit_are_killed() {
        process::become_child_subreaper().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let started = std::time::Instant::now();
        // The grandchild keeps stdout open: the call must still end, and kill it.
        let run = run_sh(&format!("{GRANDCHILD}; exit 0"), &req, &ctx).await;
        assert_eq!(run.outcome.exit_code, 0);
        assert_eq!(run.outcome.termination, Some(Termination::Exited));
        assert_eq!(run.outcome.output_text, "spawned\n");
        assert!(started.elapsed() < Duration::from_secs(8));
        let gc = read_pid(&dir.path().join("gc.pid")).await;
        assert!(
            vanishes(gc).await,
            "grandchild {gc} survived: {:?}",
            proc_stat(gc)
        );
    }

    #[tokio::test]
    async fn a_detached_leftover_of_a_normal_exit_is_swept_after_the_call() {
        process::become_child_subreaper().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        // The leftover left the group and let go of our pipes: the call ends at once, and the
        // background sweep (the agent's group is empty) finds it by its marker.
        let script = "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $! > gc.pid; exit 0";
        let started = std::time::Instant::now();
        let run = run_sh(script, &req, &ctx).await;
        assert_eq!(run.outcome.termination, Some(Termination::Exited));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let gc = read_pid(&dir.path().join("gc.pid")).await;
        assert!(
            vanishes(gc).await,
            "detached leftover {gc} survived: {:?}",
            proc_stat(gc)
        );
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, mut rx, _) = context();
        let gc_file = dir.path().join("gc.pid");
        let script = format!("{GRANDCHILD}; sleep 300");
        tokio::select! {
            _ = run_sh(&script, &req, &ctx) => panic!("finished"),
            _ = read_pid(&gc_file) => {}
        }
        let pid = spawned_pid(&mut rx);
        let gc = read_pid(&gc_file).await;
        assert!(dies(pid).await);
        assert!(
            dies(gc).await,
            "grandchild {gc} survived: {:?}",
            proc_stat(gc)
        );
    }

    #[tokio::test]
    async fn both_streams_are_logged_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let mut chunks = ctx.output.subscribe();
        let run = run_sh(
            "echo out; sleep 0.1; echo err >&2; sleep 0.1; printf tail",
            &req,
            &ctx,
        )
        .await;
        assert_eq!(run.outcome.output_bytes, 12);
        assert_eq!(run.outcome.output_lines, 3);
        assert_eq!(run.outcome.output_text, "out\ntail");
        assert_eq!(run.outcome.stderr_tail, "err\n");
        assert_eq!(std::fs::read(&req.log_path).unwrap(), b"out\nerr\ntail");
        let mut seen = Vec::new();
        while let Ok(chunk) = chunks.try_recv() {
            assert_eq!(chunk.step_id, req.step_id);
            seen.push((chunk.stream, chunk.data));
        }
        assert_eq!(
            seen,
            [
                (OutputStream::Stdout, Bytes::from_static(b"out\n")),
                (OutputStream::Stderr, Bytes::from_static(b"err\n")),
                (OutputStream::Stdout, Bytes::from_static(b"tail")),
            ]
        );
    }

    #[tokio::test]
    async fn non_utf8_output_is_logged_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let run = run_sh(r"printf '\377\376a\200b\n{\377}\n\303'", &req, &ctx).await;
        assert_eq!(run.outcome.exit_code, 0);
        assert_eq!(
            std::fs::read(&req.log_path).unwrap(),
            b"\xff\xfea\x80b\n{\xff}\n\xc3"
        );
        assert_eq!(
            run.outcome.output_text,
            "\u{fffd}\u{fffd}a\u{fffd}b\n{\u{fffd}}\n\u{fffd}"
        );
        assert_eq!(run.outcome.output_lines, 3);
        assert!(run.outcome.result.is_none());
    }

    #[tokio::test]
    async fn hundred_megabytes_stream_through_in_bounded_memory() {
        let _serial = HUGE.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        // Followers that never read must not make the executor hold the output either.
        let _lagging = ctx.output.subscribe();
        let size: u64 = 100 * 1024 * 1024;
        let line = "a".repeat(99);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let before = rss_kib();
        let sampler = sample_rss(stop.clone());
        let run = run_sh(&format!("yes {line} | head -c {size}"), &req, &ctx).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap();
        let growth_mib = peak.saturating_sub(before) / 1024;
        eprintln!(
            "100 MiB of output: peak RSS growth {growth_mib} MiB, retained {} bytes",
            run.peak_retained
        );

        assert_eq!(run.outcome.exit_code, 0);
        assert_eq!(run.outcome.output_bytes, size);
        assert_eq!(run.outcome.output_lines, size / 100);
        assert_eq!(std::fs::metadata(&req.log_path).unwrap().len(), size);
        assert!(run.outcome.output_text.len() <= STDOUT_TAIL);
        assert!(run.outcome.output_text.ends_with("aaa\n"));
        assert!(run.peak_retained < 512 * 1024, "{}", run.peak_retained);
        assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB");
    }

    #[tokio::test]
    async fn a_fifty_megabyte_line_is_not_kept_whole() {
        let _serial = HUGE.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let req = request(dir.path());
        let (ctx, _rx, _) = context();
        let size: u64 = 50 * 1024 * 1024;
        let script = format!(
            r#"printf '{{"type":"assistant","text":"'; head -c {size} /dev/zero | tr '\0' 'a'; printf '"}}\n'; echo '{{"type":"result","is_error":false,"result":"after the long line"}}'"#
        );
        let run = run_sh(&script, &req, &ctx).await;
        let result_line = br#"{"type":"result","is_error":false,"result":"after the long line"}"#;
        let prefix = br#"{"type":"assistant","text":""#;
        let expected = prefix.len() as u64 + size + 3 + result_line.len() as u64 + 1;
        assert_eq!(run.outcome.output_bytes, expected);
        assert_eq!(std::fs::metadata(&req.log_path).unwrap().len(), expected);
        assert_eq!(run.outcome.output_lines, 2);
        assert_eq!(run.outcome.output_text, "after the long line");
        assert!(
            run.peak_retained <= LINE_CAP + 512 * 1024,
            "{}",
            run.peak_retained
        );
    }

    #[test]
    fn line_splitter_keeps_only_json_candidates() {
        let mut lines = LineSplitter::new(16);
        let mut got = Vec::new();
        let mut collect = |l: &[u8]| got.push(String::from_utf8_lossy(l).into_owned());
        lines.feed(b"plain\n  {\"a\":1}\n{\"b\"", &mut collect);
        lines.feed(b":2}\n{\"too\":\"long for the cap\"}\n{}", &mut collect);
        lines.end_line(&mut collect);
        assert_eq!(got, ["{\"a\":1}", "{\"b\":2}", "{}"]);
        assert!(lines.retained() <= 32);
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut tail = Tail::new(4);
        tail.push(b"abc");
        tail.push(b"defgh");
        tail.push(b"ij");
        assert_eq!(tail.text(), "ghij");
        assert!(tail.retained() <= 16);
        let mut tail = Tail::new(3);
        tail.push("xé".as_bytes());
        tail.push(b"z");
        // "é" is two bytes; cutting inside it must not leave a replacement character.
        assert_eq!(tail.text(), "\u{e9}z");
        let mut tail = Tail::new(2);
        tail.push("aéz".as_bytes());
        assert_eq!(tail.text(), "z");
    }
}
