//! `analyze`: starts a run's postmortem on the daemon, waits for it to end and prints where
//! its files are and the first lines of its summary.

use std::time::Duration;

use loop_engine::domain::RunStatus;
use loop_http::api::{ListQuery, PostmortemRequest};

use crate::cli::AnalyzeArgs;
use crate::commands::{Ctx, out, out_json, resolve_id, verdict};
use crate::exit;

/// How often the postmortem's state is asked for while it runs.
const POLL: Duration = Duration::from_millis(500);

pub(crate) async fn analyze(ctx: &Ctx, a: &AnalyzeArgs) -> anyhow::Result<()> {
    let id = match &a.id {
        Some(text) => resolve_id(ctx, text).await?,
        None => latest_ended(ctx).await?,
    };
    let req = PostmortemRequest {
        model: a.model.clone(),
        prompt_only: a.prompt_only,
    };
    let mut pm = ctx.client.start_postmortem(id, &req).await?;
    if !ctx.json {
        out(&format!(
            "postmortem of run {id} under way: {}",
            pm.dir.display()
        ));
    }
    while pm.running {
        tokio::time::sleep(POLL).await;
        pm = ctx.client.postmortem(id).await?;
    }
    if ctx.json {
        out_json(&pm)?;
    } else {
        let mut text = String::new();
        for f in &pm.files {
            text.push_str(&format!("  {:<28} {:>9} bytes\n", f.name, f.bytes));
        }
        if let Some(head) = &pm.summary_head {
            text.push_str("\nsummary:\n");
            for line in head.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        out(&text);
    }
    match pm.last_status.as_deref() {
        Some("ok") => Ok(()),
        _ => Err(verdict(
            exit::RUN_FAILED,
            format!(
                "the postmortem of run {id} failed: {}",
                pm.last_message
                    .as_deref()
                    .unwrap_or("no POSTMORTEM_END row")
            ),
        )),
    }
}

/// The newest run that has ended.
async fn latest_ended(ctx: &Ctx) -> anyhow::Result<loop_engine::domain::RunId> {
    let runs = ctx
        .client
        .list_runs(&ListQuery {
            statuses: vec![RunStatus::Completed, RunStatus::Failed, RunStatus::Canceled],
            limit: Some(1),
            ..ListQuery::default()
        })
        .await?;
    runs.first().map(|r| r.id).ok_or_else(|| {
        verdict(
            exit::NOT_FOUND,
            "no run has ended yet: `loopctl analyze --latest` analyses the newest run that has"
                .into(),
        )
    })
}
