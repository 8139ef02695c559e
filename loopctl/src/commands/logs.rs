//! `loopctl logs <id> [--step N] [--raw]`: print a stored agent step log, rendered like `tail`
//! (or the stored stream-json as it is with `--raw`).

use std::io::Write;

use crate::cli::LogsArgs;
use crate::commands::{Ctx, resolve_id};
use crate::exit;
use crate::render::AgentView;

pub(crate) async fn logs(ctx: &Ctx, a: &LogsArgs) -> anyhow::Result<()> {
    let id = resolve_id(ctx, &a.id).await?;
    let seq = match a.step {
        Some(n) => n,
        None => {
            let steps = ctx.client.steps(id).await?;
            steps
                .iter()
                .rev()
                .find(|s| s.output_path.is_some())
                .map(|s| s.seq)
                .ok_or_else(|| {
                    anyhow::Error::new(exit::Verdict {
                        code: exit::NOT_FOUND,
                        message: format!("run {id} has no step with a log yet"),
                    })
                })?
        }
    };
    let mut stream = ctx.client.step_log_stream(id, seq).await?;
    let mut stdout = std::io::stdout().lock();
    // Rendered line by line (a line may span chunks; bytes that are not UTF-8 are replaced).
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await? {
        let shown = if a.raw {
            chunk.to_vec()
        } else {
            pending.extend_from_slice(&chunk);
            render_lines(&mut pending, false).into_bytes()
        };
        // A closed pipe (`loopctl logs ... | head`) is not an error.
        if stdout.write_all(&shown).is_err() {
            return Ok(());
        }
    }
    if !a.raw {
        let _ = stdout.write_all(render_lines(&mut pending, true).as_bytes());
    }
    let _ = stdout.flush();
    Ok(())
}

/// Renders the complete lines at the start of `pending` (all of it when `end`), leaving an
/// unfinished last line in it.
fn render_lines(pending: &mut Vec<u8>, end: bool) -> String {
    let cut = if end {
        pending.len()
    } else {
        match pending.iter().rposition(|b| *b == b'\n') {
            Some(pos) => pos + 1,
            None => return String::new(),
        }
    };
    let done: Vec<u8> = pending.drain(..cut).collect();
    let mut out = String::new();
    for line in done.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        out.push_str(&AgentView::line(text.trim_end_matches('\r')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_are_rendered_once_whole() {
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"héllo"}]}}"#;
        let bytes = format!("{line}\nplain\n{line}");
        let (a, b) = bytes.as_bytes().split_at(40);
        let mut pending = a.to_vec();
        assert_eq!(render_lines(&mut pending, false), "");
        pending.extend_from_slice(b);
        assert_eq!(render_lines(&mut pending, false), "héllo\nplain\n");
        assert_eq!(render_lines(&mut pending, true), "héllo\n");
        assert!(pending.is_empty());
    }
}
