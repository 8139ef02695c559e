//! `loopctl logs <id> [--step N]`: print a stored agent step log.

use std::io::Write;

use crate::cli::LogsArgs;
use crate::commands::{Ctx, parse_id};
use crate::exit;

pub(crate) async fn logs(ctx: &Ctx, a: &LogsArgs) -> anyhow::Result<()> {
    let id = parse_id(&a.id)?;
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
    while let Some(chunk) = stream.next().await? {
        // A closed pipe (`loopctl logs ... | head`) is not an error.
        if stdout.write_all(&chunk).is_err() {
            return Ok(());
        }
    }
    let _ = stdout.flush();
    Ok(())
}
