//! `pause`, `resume`, `cancel` and `wait`.

use crate::commands::{Ctx, out, out_json, resolve_id};
use crate::exit;
use loop_engine::domain::RunStatus;
use loop_http::api::RunResource;

fn show(ctx: &Ctx, run: &RunResource, what: &str) -> anyhow::Result<()> {
    if ctx.json {
        return out_json(run);
    }
    out(&format!(
        "{} {} ({})",
        run.id,
        what,
        crate::render::status(run.status, ctx.colour)
    ));
    Ok(())
}

pub(crate) async fn pause(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let run = ctx.client.pause(resolve_id(ctx, id).await?).await?;
    let what = if run.status == RunStatus::Paused {
        "paused"
    } else {
        "pausing at the next step boundary"
    };
    show(ctx, &run, what)
}

pub(crate) async fn resume(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let run = ctx.client.resume(resolve_id(ctx, id).await?).await?;
    show(ctx, &run, "resumed")
}

pub(crate) async fn cancel(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let run = ctx.client.cancel(resolve_id(ctx, id).await?).await?;
    let what = if run.status == RunStatus::Canceled {
        "canceled"
    } else {
        "canceling"
    };
    show(ctx, &run, what)
}

/// Follows the run's events until the stream ends (the run is terminal), reconnecting with
/// the last event id if the daemon goes away meanwhile.
pub(crate) async fn wait_terminal(
    ctx: &Ctx,
    id: loop_engine::domain::RunId,
) -> anyhow::Result<RunResource> {
    let mut last = None;
    loop {
        let run = ctx.client.get_run(id).await?;
        if run.status.is_terminal() {
            return Ok(run);
        }
        match ctx.client.events(id, last).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(ev)) => last = Some(ev.seq),
                    Ok(None) => break,
                    Err(_) => break,
                }
            },
            Err(loop_http::ClientError::Connect { .. }) => {
                ctx.client
                    .wait_ready(std::time::Duration::from_secs(60))
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) async fn wait(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let run = wait_terminal(ctx, resolve_id(ctx, id).await?).await?;
    if ctx.json {
        out_json(&run)?;
    } else {
        out(&format!(
            "{} {} ({})",
            run.id,
            crate::render::status(run.status, ctx.colour),
            run.exit_reason.as_deref().unwrap_or("-")
        ));
    }
    let code = match run.status {
        RunStatus::Completed => return Ok(()),
        RunStatus::Canceled => exit::RUN_CANCELED,
        _ => exit::RUN_FAILED,
    };
    Err(anyhow::Error::new(exit::Verdict {
        code,
        message: run.failure.unwrap_or_default(),
    }))
}
