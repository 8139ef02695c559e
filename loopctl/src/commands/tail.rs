//! `loopctl tail <id>`: the live agent output of a run with a status line (step, phase, tasks,
//! elapsed, cost). It survives a daemon restart: it reconnects on any end of the stream while
//! the run is not over, and skips output it already printed, using the byte offsets of the
//! output stream.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use loop_engine::domain::{RunId, RunStatus, StepId, now_ms};
use loop_http::ClientError;
use loop_http::api::RunResource;
use loop_http::client::OutputItem;

use crate::commands::{Ctx, resolve_id};
use crate::exit;
use crate::render;

/// How long `tail` waits for a restarted daemon.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of each step's output already printed, so a reconnect repeats nothing.
#[derive(Debug, Default)]
pub(crate) struct Printed {
    per_step: HashMap<StepId, u64>,
}

impl Printed {
    /// The part of a chunk at `offset` not printed yet (empty when all of it was).
    pub(crate) fn fresh<'a>(&mut self, step: StepId, offset: u64, text: &'a str) -> &'a str {
        let done = self.per_step.entry(step).or_insert(0);
        let end = offset + text.len() as u64;
        if end <= *done {
            return "";
        }
        let skip = usize::try_from(done.saturating_sub(offset)).unwrap_or(usize::MAX);
        *done = end;
        // Never cut inside a character.
        let mut start = skip.min(text.len());
        while !text.is_char_boundary(start) {
            start += 1;
        }
        &text[start..]
    }
}

/// Where the status line goes. On a terminal it stays drawn on the last line: output is
/// written above it and it is redrawn after each complete line (and every second, for the
/// elapsed time). Off a terminal it is printed as a line of its own only when something
/// other than the elapsed time changed, and once more at the end if output came since.
struct Screen {
    tty: bool,
    colour: bool,
    /// The status line as last drawn (on a terminal) or printed.
    line: String,
    /// The status line without its elapsed time, as last printed off a terminal.
    printed_key: String,
    /// Drawn on the terminal now.
    drawn: bool,
    /// Output was written since the status line was last printed (off a terminal).
    text_since: bool,
}

impl Screen {
    fn new(tty: bool, colour: bool) -> Self {
        Self {
            tty,
            colour,
            line: String::new(),
            printed_key: String::new(),
            drawn: false,
            text_since: false,
        }
    }

    fn erase(&mut self, w: &mut impl Write) {
        if self.tty && self.drawn {
            let _ = write!(w, "\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn draw(&mut self, w: &mut impl Write) {
        if self.tty && !self.line.is_empty() {
            self.erase(w);
            let _ = write!(w, "{}", self.line);
            self.drawn = true;
            let _ = w.flush();
        }
    }

    /// Shows `status`; `last` forces it out off a terminal when output came since.
    fn status(&mut self, w: &mut impl Write, status: &Status, last: bool) {
        self.line = status.line(self.colour);
        if self.tty {
            self.draw(w);
            return;
        }
        let key = status.key();
        if key != self.printed_key || (last && self.text_since) {
            let _ = writeln!(w, "{}", self.line);
            let _ = w.flush();
            self.printed_key = key;
            self.text_since = false;
        }
    }

    fn text(&mut self, w: &mut impl Write, text: &str) {
        self.erase(w);
        let _ = write!(w, "{text}");
        self.text_since = true;
        if text.ends_with('\n') {
            self.draw(w);
        } else {
            let _ = w.flush();
        }
    }

    /// Leaves the status line as the last line of the output.
    fn finish(&mut self, w: &mut impl Write) {
        if self.tty && self.drawn {
            let _ = writeln!(w);
            self.drawn = false;
        }
    }
}

/// What the status line shows.
struct Status {
    run: RunResource,
    cost_usd: Option<f64>,
    costs: render::Costs,
}

impl Status {
    fn line(&self, colour: bool) -> String {
        render::status_line(
            &self.run,
            self.cost_usd,
            self.costs,
            now_ms() - self.run.created_at_ms,
            colour,
        )
    }

    /// Everything but the elapsed time.
    fn key(&self) -> String {
        render::status_line(&self.run, self.cost_usd, self.costs, 0, false)
    }
}

/// The run and what its steps cost so far.
async fn status(ctx: &Ctx, id: RunId) -> Result<Status, ClientError> {
    let run = ctx.client.get_run(id).await?;
    let steps = ctx.client.steps(id).await?;
    let costs: Vec<f64> = steps
        .iter()
        .filter_map(|s| s.usage.as_ref().and_then(|u| u.cost_usd))
        .collect();
    let cost_usd = (!costs.is_empty()).then(|| costs.iter().sum());
    Ok(Status {
        run,
        cost_usd,
        costs: ctx.costs,
    })
}

pub(crate) async fn tail(ctx: &Ctx, id: &str, raw: bool) -> anyhow::Result<()> {
    let id = resolve_id(ctx, id).await?;
    follow(ctx, id, raw).await
}

/// Waits for the daemon after the stream or a request broke off.
async fn reconnect(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.client.wait_ready(RECONNECT_TIMEOUT).await?;
    Ok(())
}

/// Prints the run's output until it ends: readable (stream-json rendered) or `raw`, with the
/// status line. Any end of the output stream while the run is not terminal (the daemon went
/// away, restarted gracefully, or closed the stream) is followed by a reconnect. The exit
/// status is `wait`'s: 0 for COMPLETED, 1 for FAILED, 2 for CANCELED.
pub(crate) async fn follow(ctx: &Ctx, id: RunId, raw: bool) -> anyhow::Result<()> {
    let mut screen = Screen::new(std::io::stdout().is_terminal(), ctx.colour);
    let mut printed = Printed::default();
    let mut view = render::AgentView::new(ctx.costs);
    let mut stdout = std::io::stdout();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut stream = match status(ctx, id).await {
            Ok(st) => {
                screen.status(&mut stdout, &st, false);
                match ctx.client.output(id).await {
                    Ok(s) => s,
                    Err(e) if transient(&e) => {
                        reconnect(ctx).await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) if transient(&e) => {
                reconnect(ctx).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tick.tick(), if screen.tty => {
                    screen.draw(&mut stdout);
                    continue;
                }
            };
            match item {
                Ok(Some(OutputItem::Step { .. })) => {
                    if let Ok(st) = status(ctx, id).await {
                        screen.status(&mut stdout, &st, false);
                    }
                }
                Ok(Some(OutputItem::Chunk {
                    step_id,
                    offset,
                    text,
                })) => {
                    let fresh = printed.fresh(step_id, offset, &text);
                    if !fresh.is_empty() {
                        let shown = if raw {
                            fresh.to_owned()
                        } else {
                            view.feed(fresh)
                        };
                        if !shown.is_empty() {
                            screen.text(&mut stdout, &shown);
                        }
                    }
                }
                // A clean end or a broken stream: the run decides what comes next.
                Ok(None) | Err(_) => break,
            }
        }
        match status(ctx, id).await {
            Ok(st) if st.run.status.is_terminal() => {
                screen.status(&mut stdout, &st, true);
                screen.finish(&mut stdout);
                return outcome(&mut stdout, &st.run);
            }
            Ok(st) => {
                // Not over (e.g. paused, or a stream closed by a daemon shutting down that
                // still answers): look again shortly rather than spin.
                screen.status(&mut stdout, &st, false);
                let pause = if st.run.status == RunStatus::Paused {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(250)
                };
                tokio::time::sleep(pause).await;
            }
            Err(e) if transient(&e) => reconnect(ctx).await?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Errors after which the daemon may come back: it is unreachable or the exchange broke.
fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Connect { .. } | ClientError::Protocol { .. }
    )
}

/// The failure line and `wait`'s exit status for a terminal run.
fn outcome(w: &mut impl Write, run: &RunResource) -> anyhow::Result<()> {
    if let Some(f) = &run.failure {
        let _ = writeln!(w, "failure: {f}");
    }
    if let Some(p) = render::merge_pending(run) {
        let _ = writeln!(w, "{p}");
    }
    let _ = w.flush();
    let code = match run.status {
        RunStatus::Completed => return Ok(()),
        RunStatus::Canceled => exit::RUN_CANCELED,
        _ => exit::RUN_FAILED,
    };
    Err(anyhow::Error::new(exit::Verdict {
        code,
        message: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_skips_what_was_printed_and_keeps_the_rest() {
        let step = StepId::new();
        let mut p = Printed::default();
        assert_eq!(p.fresh(step, 0, "hello "), "hello ");
        assert_eq!(p.fresh(step, 6, "world\n"), "world\n");
        // After a reconnect the step's output is replayed from its start.
        assert_eq!(p.fresh(step, 0, "hello world\nmore"), "more");
        assert_eq!(p.fresh(step, 0, "hello "), "");
        let other = StepId::new();
        assert_eq!(p.fresh(other, 0, "new step"), "new step");
    }

    fn sample(status: RunStatus, created_at_ms: i64) -> Status {
        let run: RunResource = serde_json::from_value(serde_json::json!({
            "id": RunId::new(), "name": "w", "name_source": "spec_slug", "status": status,
            "exit_reason": null, "failure": null, "workspace_root": "/w", "spec_path": "s",
            "plan_path": "p", "base_branch": "main", "run_branch": "", "merge_target_branch": null,
            "merge_strategy": "squash", "worktree_path": "", "iterations_run": 0,
            "tasks_done": 0, "tasks_total": 2, "created_at": "", "created_at_ms": created_at_ms,
            "updated_at": "", "updated_at_ms": 0, "worker_id": null, "last_step": null,
            "config": {}
        }))
        .expect("a run resource");
        Status {
            run,
            cost_usd: Some(0.25),
            costs: render::Costs::Reported,
        }
    }

    #[test]
    fn on_a_terminal_the_status_line_stays_drawn_below_the_output() {
        let mut screen = Screen::new(true, false);
        let mut out = Vec::new();
        screen.status(&mut out, &sample(RunStatus::Running, now_ms()), false);
        screen.text(&mut out, "hello\n");
        let text = String::from_utf8(out).expect("utf-8");
        // Drawn, erased for the output line, drawn again after it.
        let line = "[RUNNING] - | tasks 0/2 | ";
        assert!(text.starts_with(line), "{text:?}");
        let after = text.rsplit("hello\n").next().expect("output");
        assert!(
            after.starts_with(line) && after.contains("$0.2500"),
            "{text:?}"
        );
        assert!(screen.drawn);
    }

    #[test]
    fn off_a_terminal_the_status_line_is_printed_once_per_change() {
        let mut screen = Screen::new(false, false);
        let mut out = Vec::new();
        let created = now_ms() - 5000;
        screen.status(&mut out, &sample(RunStatus::Running, created), false);
        screen.status(&mut out, &sample(RunStatus::Running, created - 1000), false);
        screen.text(&mut out, "work\n");
        screen.status(&mut out, &sample(RunStatus::Running, created), false);
        screen.status(&mut out, &sample(RunStatus::Running, created), true);
        screen.status(&mut out, &sample(RunStatus::Completed, created), true);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("[RUNNING]"));
        assert_eq!(lines[1], "work");
        assert!(
            lines[2].starts_with("[RUNNING]"),
            "the last one, after output"
        );
        assert!(lines[3].starts_with("[COMPLETED]"));
    }

    #[test]
    fn never_cuts_inside_a_character() {
        let step = StepId::new();
        let mut p = Printed::default();
        assert_eq!(p.fresh(step, 0, "ab"), "ab");
        // "é" is two bytes; the already printed prefix ends inside nothing here.
        assert_eq!(p.fresh(step, 0, "abé"), "é");
    }
}
