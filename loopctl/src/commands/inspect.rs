//! `list` and `inspect`.

use loop_engine::domain::RunStatus;
use loop_http::api::ListQuery;

use crate::cli::ListArgs;
use crate::commands::{Ctx, out, out_json, resolve_id};
use crate::exit;
use crate::render;

pub(crate) async fn list(ctx: &Ctx, a: &ListArgs) -> anyhow::Result<()> {
    let mut statuses = Vec::new();
    for s in &a.status {
        let s = s.trim().to_ascii_uppercase();
        statuses.push(s.parse::<RunStatus>().map_err(|_| {
            anyhow::Error::new(exit::Verdict {
                code: exit::USAGE,
                message: format!(
                    "--status `{s}`: expected PENDING, RUNNING, PAUSED, COMPLETED, FAILED or CANCELED"
                ),
            })
        })?);
    }
    let runs = ctx
        .client
        .list_runs(&ListQuery {
            workspace_root: a.workspace.clone(),
            statuses,
            limit: Some(a.limit),
            before: None,
        })
        .await?;
    if ctx.json {
        return out_json(&runs);
    }
    if runs.is_empty() {
        out("no runs");
        return Ok(());
    }
    out(&render::runs_table(&runs, ctx.colour));
    Ok(())
}

pub(crate) async fn inspect(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let id = resolve_id(ctx, id).await?;
    let run = ctx.client.get_run(id).await?;
    let steps = ctx.client.steps(id).await?;
    let artifacts = ctx.client.artifacts(id).await?;
    // A daemon without postmortems (older) or a run folder it cannot read: no section.
    let postmortem = ctx.client.postmortem(id).await.ok();
    if ctx.json {
        return out_json(&serde_json::json!({
            "run": run,
            "steps": steps,
            "artifacts": artifacts,
            "postmortem": postmortem,
        }));
    }
    let mut text = render::inspect(&run, &steps, &artifacts, ctx.colour, ctx.costs);
    if let Some(section) = postmortem.as_ref().and_then(render::postmortem_section) {
        text.push('\n');
        text.push_str(&section);
    }
    out(&text);
    Ok(())
}
