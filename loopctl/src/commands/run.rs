//! `loopctl run` and `loopctl prompt`: turn the command line into a create-run request.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loop_engine::config::find_workspace_root;
use loop_engine::domain::{MergeStrategy, NameSource};
use loop_engine::process::Cmd;
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

/// The tracked files with uncommitted changes in the checkout at `workspace`, as `git status`
/// names them; `None` when it is not a git checkout (or git cannot say).
pub(crate) async fn dirty_tracked_files(workspace: &Path) -> Option<Vec<String>> {
    let out = Cmd::new("git", workspace)
        .args(["status", "--porcelain=v1", "--untracked-files=no"])
        .timeout(Some(std::time::Duration::from_secs(10)))
        .output()
        .await
        .ok()?;
    if !out.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.get(3..))
            .map(str::to_owned)
            .collect(),
    )
}

/// The one-line warning for a checkout with uncommitted changes to tracked files.
pub(crate) fn dirty_warning(workspace: &Path, files: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut names = files
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        names.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    format!(
        "warning: your checkout {} has uncommitted changes to tracked files ({names}); the \
         run's merge will not touch your checkout, but if the merge target is checked out \
         there and still has uncommitted changes when the run ends, the merge waits \
         (MERGE_PENDING) and the work stays on the run branch",
        workspace.display()
    )
}

pub(crate) async fn run(ctx: &Ctx, a: &RunArgs) -> anyhow::Result<()> {
    let req = request(a)?;
    let created = ctx.client.create_run(&req).await?;
    // Said at creation, not found at the end: the user's checkout is dirty.
    if let Some(files) = dirty_tracked_files(&req.workspace_root)
        .await
        .filter(|f| !f.is_empty())
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            dirty_warning(&req.workspace_root, &files)
        );
    }
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
    // On stderr: stdout is the prompt itself, ready to pipe.
    if !p.agent.is_empty() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "agent: {}", p.agent);
    }
    out(&p.implementation);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn git(dir: &Path, args: &[&str]) {
        let out = Cmd::new("git", dir)
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .output()
            .await
            .expect("git runs");
        assert!(out.success(), "git {args:?}: {}", out.stderr_text());
    }

    #[tokio::test]
    async fn a_dirty_checkout_is_detected_and_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ws = dir.path();
        assert_eq!(dirty_tracked_files(ws).await, None, "not a git checkout");
        git(ws, &["init", "-q"]).await;
        std::fs::write(ws.join("a.txt"), "one\n").expect("write");
        git(ws, &["add", "a.txt"]).await;
        git(ws, &["commit", "-qm", "a"]).await;
        assert_eq!(dirty_tracked_files(ws).await, Some(vec![]));
        // Untracked files are none of the merge's business.
        std::fs::write(ws.join("new.txt"), "x\n").expect("write");
        assert_eq!(dirty_tracked_files(ws).await, Some(vec![]));
        std::fs::write(ws.join("a.txt"), "changed\n").expect("write");
        let files = dirty_tracked_files(ws).await.expect("a checkout");
        assert_eq!(files, vec!["a.txt".to_owned()]);
        let line = dirty_warning(ws, &files);
        assert!(line.starts_with("warning: your checkout "), "{line}");
        assert!(line.contains("(a.txt)"), "{line}");
        assert!(line.contains("will not touch your checkout"), "{line}");
        assert!(line.contains("MERGE_PENDING"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        let many: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        assert!(dirty_warning(ws, &many).contains("(f0, f1, f2 and 2 more)"));
    }
}
