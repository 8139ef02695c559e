//! `loopctl run` and `loopctl prompt`: turn the command line into a create-run request.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loop_engine::config::find_workspace_root;
use loop_engine::domain::{MergeStrategy, NameSource};
use loop_http::api::CreateRunRequest;

use crate::cli::RunArgs;
use crate::commands::{Ctx, out, out_json};
use crate::exit;

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(exit::Verdict {
        code: exit::USAGE,
        message,
    })
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Builds the request: the workspace is the git root of the current directory (or
/// `--workspace`), relative paths are sent resolved against the current directory.
pub(crate) fn request(a: &RunArgs) -> anyhow::Result<CreateRunRequest> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = match &a.workspace {
        Some(w) => absolute(&cwd, w),
        None => find_workspace_root(&cwd),
    };
    let mut overrides = serde_json::Map::new();
    let mut set = |k: &str, v: String| {
        overrides.insert(k.to_owned(), serde_json::Value::String(v));
    };
    if let Some(v) = &a.name_model {
        set("run_naming_model", v.clone());
    }
    if let Some(v) = &a.base_branch {
        set("base_branch", v.clone());
    }
    if let Some(v) = &a.run_branch_prefix {
        set("run_branch_prefix", v.clone());
    }
    if let Some(v) = &a.worktree_path_template {
        set("worktree_path_template", v.clone());
    }
    if let Some(v) = a.max_concurrency {
        set("max_concurrency", v.to_string());
    }
    if let Some(v) = a.max_runs_per_workspace {
        set("max_runs_per_workspace", v.to_string());
    }
    if let Some(v) = &a.queue_policy {
        set("queue_policy", v.clone());
    }
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--set `{kv}`: expected key=value")))?;
        set(k.trim(), v.trim().to_owned());
    }
    let name_source = a
        .name_source
        .as_deref()
        .map(|s| {
            s.parse::<NameSource>()
                .map_err(|_| usage(format!("--name-source `{s}`: expected haiku or spec_slug")))
        })
        .transpose()?;
    let merge_strategy = a
        .merge_strategy
        .as_deref()
        .map(|s| {
            s.parse::<MergeStrategy>().map_err(|_| {
                usage(format!(
                    "--merge-strategy `{s}`: expected squash, merge or none"
                ))
            })
        })
        .transpose()?;
    let config_file = a
        .config
        .clone()
        .or_else(|| {
            std::env::var_os("LOOP_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .map(|p| absolute(&cwd, &p));
    Ok(CreateRunRequest {
        spec_path: a.spec.clone(),
        plan_path: a.plan.clone(),
        workspace_root: workspace,
        config_override: (!overrides.is_empty()).then_some(overrides),
        config_file,
        cwd: Some(cwd),
        name: a.name.clone(),
        name_source,
        merge_target_branch: a.merge_target.clone(),
        merge_strategy,
    })
}

pub(crate) async fn run(ctx: &Ctx, a: &RunArgs) -> anyhow::Result<()> {
    let created = ctx.client.create_run(&request(a)?).await?;
    if ctx.json {
        let mut v = serde_json::to_value(&created.run).context("cannot render the run")?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("warnings".into(), serde_json::json!(created.warnings));
        }
        return out_json(&v);
    }
    for w in &created.warnings {
        out(&format!("warning: {w}"));
    }
    out(&format!("{} {}", created.run.id, created.run.name));
    Ok(())
}

pub(crate) async fn prompt(ctx: &Ctx, a: &RunArgs) -> anyhow::Result<()> {
    let p = ctx.client.prompt(&request(a)?).await?;
    if ctx.json {
        return out_json(&p);
    }
    for w in &p.warnings {
        out(&format!("warning: {w}"));
    }
    out(&p.implementation);
    Ok(())
}
