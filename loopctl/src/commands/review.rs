//! `diff`, `merge`, `scrap`, `pr`, `retry` and `worktrees`: a person's review of finished
//! runs (SPEC §12). Each is one client call and its rendering.

use anyhow::Context;
use loop_engine::domain::MergeStrategy;
use loop_http::api::{CreatePrRequestBody, MergeRequestBody, ReviewActionResponse};

use crate::cli::{DiffArgs, MergeArgs, PrArgs, WorktreesArgs};
use crate::commands::{Ctx, out, out_json, resolve_id};
use crate::exit;
use crate::render_review;

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(exit::Verdict {
        code: exit::USAGE,
        message,
    })
}

/// The answer of an action: the run's id, what happened, then the details.
fn show_action(ctx: &Ctx, done: &ReviewActionResponse, what: &str) -> anyhow::Result<()> {
    if ctx.json {
        return out_json(done);
    }
    let mut text = format!(
        "{} {what} (review: {})\n",
        done.run.id, done.run.review_status
    );
    for d in &done.details {
        text.push_str(&format!("  {d}\n"));
    }
    out(&text);
    Ok(())
}

pub(crate) async fn diff(ctx: &Ctx, a: &DiffArgs) -> anyhow::Result<()> {
    let id = resolve_id(ctx, &a.id).await?;
    let diff = ctx.client.diff(id, None).await?;
    if ctx.json {
        return out_json(&diff);
    }
    if a.stat {
        out(&render_review::diff_stat(&diff, ctx.colour));
    } else {
        out(&render_review::diff(&diff, ctx.colour));
    }
    Ok(())
}

pub(crate) async fn merge(ctx: &Ctx, a: &MergeArgs) -> anyhow::Result<()> {
    let strategy = match a.strategy.as_deref() {
        None => None,
        Some(s) => match s.parse::<MergeStrategy>() {
            Ok(MergeStrategy::None) | Err(_) => {
                return Err(usage(format!(
                    "--strategy `{s}`: expected `squash` or `merge`"
                )));
            }
            Ok(s) => Some(s),
        },
    };
    let id = resolve_id(ctx, &a.id).await?;
    let done = ctx
        .client
        .merge(
            id,
            &MergeRequestBody {
                strategy,
                target: a.target.clone(),
            },
        )
        .await?;
    let what = format!(
        "merged at {}",
        done.run.merge_commit.as_deref().unwrap_or("-")
    );
    show_action(ctx, &done, &what)
}

pub(crate) async fn scrap(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let id = resolve_id(ctx, id).await?;
    let done = ctx.client.scrap(id).await?;
    show_action(ctx, &done, "scrapped")
}

pub(crate) async fn pr(ctx: &Ctx, a: &PrArgs) -> anyhow::Result<()> {
    let body = match (&a.body, &a.body_file) {
        (Some(_), Some(_)) => {
            return Err(usage("give --body or --body-file, not both".into()));
        }
        (Some(b), None) => Some(b.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --body-file {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let id = resolve_id(ctx, &a.id).await?;
    let done = ctx
        .client
        .create_pr(
            id,
            &CreatePrRequestBody {
                title: a.title.clone(),
                body,
                draft: a.draft,
                base: a.base.clone(),
            },
        )
        .await?;
    let what = format!(
        "pull request opened: {}",
        done.run.pr_url.as_deref().unwrap_or("-")
    );
    show_action(ctx, &done, &what)
}

pub(crate) async fn retry(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let id = resolve_id(ctx, id).await?;
    let run = ctx.client.retry(id).await?;
    if ctx.json {
        return out_json(&run);
    }
    let ceiling = run
        .config
        .get("iterations")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_default();
    out(&format!(
        "{} queued again ({}): it goes on from its last step on {} with {} more iterations",
        run.id,
        crate::render::status(run.status, ctx.colour),
        run.run_branch,
        ceiling.saturating_sub(u64::from(run.iterations_run))
    ));
    Ok(())
}

pub(crate) async fn worktrees(ctx: &Ctx, a: &WorktreesArgs) -> anyhow::Result<()> {
    let workspace = a.workspace.as_deref();
    if a.prune {
        let report = ctx.client.prune_worktrees(workspace).await?;
        if ctx.json {
            return out_json(&report);
        }
        let mut text = String::new();
        if report.removed.is_empty() {
            text.push_str("nothing to prune (no worktree of an ended, reviewed run is on disk)\n");
        }
        for w in &report.removed {
            text.push_str(&format!(
                "removed {} ({} {}, {})\n",
                w.path.display(),
                w.name,
                w.review_status,
                w.size_bytes
                    .map_or_else(|| "-".into(), render_review::bytes)
            ));
        }
        for f in &report.failed {
            text.push_str(&format!(
                "kept {}: {}\n",
                f.worktree.path.display(),
                f.error
            ));
        }
        out(&text);
        if !report.failed.is_empty() {
            return Err(anyhow::Error::new(exit::Verdict {
                code: exit::SOFTWARE,
                message: format!("{} worktree(s) could not be removed", report.failed.len()),
            }));
        }
        return Ok(());
    }
    let list = ctx.client.worktrees(workspace).await?;
    if ctx.json {
        return out_json(&list);
    }
    if list.is_empty() {
        out("no runs");
        return Ok(());
    }
    out(&render_review::worktrees(&list, ctx.colour));
    Ok(())
}
