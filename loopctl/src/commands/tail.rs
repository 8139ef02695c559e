//! `loopctl tail <id>`: the live agent output of a run with a status line (iteration, phase,
//! tasks, elapsed). It survives a daemon restart: it reconnects and skips output it already
//! printed, using the byte offsets of the output stream.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use loop_engine::domain::{RunId, StepId, now_ms};
use loop_http::ClientError;
use loop_http::api::RunResource;
use loop_http::client::OutputItem;

use crate::commands::{Ctx, parse_id};
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

struct Screen {
    tty: bool,
    colour: bool,
    status_shown: bool,
}

impl Screen {
    fn clear_status(&mut self, w: &mut impl Write) {
        if self.tty && self.status_shown {
            let _ = write!(w, "\r\x1b[2K");
            self.status_shown = false;
        }
    }

    fn status(&mut self, w: &mut impl Write, line: &str) {
        if self.tty {
            self.clear_status(w);
            let _ = write!(w, "{line}");
            self.status_shown = true;
        } else {
            let _ = writeln!(w, "{line}");
        }
        let _ = w.flush();
    }

    fn text(&mut self, w: &mut impl Write, text: &str) {
        self.clear_status(w);
        let _ = write!(w, "{text}");
        let _ = w.flush();
    }
}

fn status_of(run: &RunResource, colour: bool) -> String {
    let (iteration, phase) = run
        .last_step
        .as_ref()
        .map(|s| (s.label.clone(), s.phase.clone()))
        .unwrap_or_default();
    render::status_line(
        run,
        &iteration,
        &phase,
        now_ms() - run.created_at_ms,
        colour,
    )
}

pub(crate) async fn tail(ctx: &Ctx, id: &str, raw: bool) -> anyhow::Result<()> {
    let id = parse_id(id)?;
    follow(ctx, id, raw).await
}

/// Prints the run's output until it ends: readable (stream-json rendered) or `raw`.
pub(crate) async fn follow(ctx: &Ctx, id: RunId, raw: bool) -> anyhow::Result<()> {
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        colour: ctx.colour,
        status_shown: false,
    };
    let mut printed = Printed::default();
    let mut view = render::AgentView::default();
    let mut stdout = std::io::stdout();
    loop {
        let run = ctx.client.get_run(id).await?;
        screen.status(&mut stdout, &status_of(&run, screen.colour));
        let mut stream = match ctx.client.output(id).await {
            Ok(s) => s,
            Err(ClientError::Connect { .. }) => {
                ctx.client.wait_ready(RECONNECT_TIMEOUT).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let ended = loop {
            match stream.next().await {
                Ok(Some(OutputItem::Step { .. })) => {
                    if let Ok(run) = ctx.client.get_run(id).await {
                        screen.status(&mut stdout, &status_of(&run, screen.colour));
                        if screen.tty {
                            screen.text(&mut stdout, "\n");
                        }
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
                Ok(None) => break true,
                // The daemon went away mid-stream: wait for it and resume.
                Err(_) => break false,
            }
        };
        if !ended {
            ctx.client.wait_ready(RECONNECT_TIMEOUT).await?;
            continue;
        }
        let run = ctx.client.get_run(id).await?;
        if run.status.is_terminal() || run.status == loop_engine::domain::RunStatus::Paused {
            screen.status(&mut stdout, &status_of(&run, screen.colour));
            if screen.tty {
                let _ = writeln!(stdout);
            }
            if let Some(f) = &run.failure {
                let _ = writeln!(stdout, "failure: {f}");
            }
            return Ok(());
        }
    }
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

    #[test]
    fn never_cuts_inside_a_character() {
        let step = StepId::new();
        let mut p = Printed::default();
        assert_eq!(p.fresh(step, 0, "ab"), "ab");
        // "é" is two bytes; the already printed prefix ends inside nothing here.
        assert_eq!(p.fresh(step, 0, "abé"), "é");
    }
}
