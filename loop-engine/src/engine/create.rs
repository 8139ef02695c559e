//! Creating runs: configuration, spec/plan resolution, naming, branch and worktree choice;
//! and previewing the prompt a run would get.

use std::path::{Component, Path, PathBuf};

use crate::backend::RunFilter;
use crate::config::{Config, ConfigLayers, resolve_plan_path, resolve_spec_path};
use crate::domain::{
    EventKind, MergeStrategy, NameSource, NewEvent, Run, RunId, RunStatus, now_ms,
};
use crate::engine::core::Engine;
use crate::engine::inner::Inner;
use crate::error::EngineError;
use crate::naming;
use crate::prompt;

/// A request to create a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateRun {
    /// The workspace (git root of the project). Must be an existing directory.
    pub workspace_root: PathBuf,
    /// Directory relative spec/plan paths are resolved against first (default: the workspace).
    pub cwd: Option<PathBuf>,
    /// The spec, as given by the user.
    pub spec_path: PathBuf,
    /// The plan, as given by the user (default: `<plans_dir>/<spec stem>-plan.md`).
    pub plan_path: Option<PathBuf>,
    /// `--config FILE` (or `LOOP_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// Config overrides as a JSON object (the HTTP API's `config_override`).
    pub json_overrides: serde_json::Map<String, serde_json::Value>,
    /// Config overrides (`key`, `value`) from the command line; they win over `json_overrides`.
    pub overrides: Vec<(String, String)>,
    /// An explicit run name.
    pub name: Option<String>,
    /// How to name the run (default: config `run_naming_mode`).
    pub name_source: Option<NameSource>,
    /// The merge target (default: config, else `agent/<spec slug>`).
    pub merge_target_branch: Option<String>,
    /// The merge strategy (default: config).
    pub merge_strategy: Option<MergeStrategy>,
}

/// A created run and the configuration warnings (unknown keys) met on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct CreatedRun {
    /// The run, `PENDING`.
    pub run: Run,
    /// Warnings to show the user.
    pub warnings: Vec<String>,
}

/// The prompt a run would get.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptPreview {
    /// The implementation prompt.
    pub implementation: String,
    /// The reviewer prompt, when the reviewer is on.
    pub reviewer: Option<String>,
    /// Configuration warnings.
    pub warnings: Vec<String>,
}

/// The resolved inputs of a run.
struct Resolved {
    workspace: PathBuf,
    config: Config,
    warnings: Vec<String>,
    spec: PathBuf,
    plan: PathBuf,
    spec_text: Option<String>,
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Checks that `path` lies inside `workspace` (lexically, after resolving `..`).
pub(crate) fn inside(workspace: &Path, path: &Path, field: &str) -> Result<PathBuf, EngineError> {
    let p = normalize(path);
    if p.starts_with(workspace) {
        Ok(p)
    } else {
        Err(EngineError::InvalidInput {
            field: field.into(),
            detail: format!(
                "{} is outside the workspace {}",
                path.display(),
                workspace.display()
            ),
        })
    }
}

fn resolve(req: &CreateRun) -> Result<Resolved, EngineError> {
    if !req.workspace_root.is_absolute() {
        return Err(EngineError::InvalidInput {
            field: "workspace_root".into(),
            detail: format!("{} is not an absolute path", req.workspace_root.display()),
        });
    }
    if !req.workspace_root.is_dir() {
        return Err(EngineError::InvalidInput {
            field: "workspace_root".into(),
            detail: format!("{} is not a directory", req.workspace_root.display()),
        });
    }
    let workspace = normalize(&req.workspace_root);
    let loaded = Config::load(&ConfigLayers {
        workspace_root: workspace.clone(),
        config_file: req.config_file.clone(),
        env_config_file: None,
        json_overrides: req.json_overrides.clone(),
        overrides: req.overrides.clone(),
    })?;
    let config = loaded.config;
    config.validate()?;
    let cwd = req.cwd.clone().unwrap_or_else(|| workspace.clone());
    let spec = resolve_spec_path(&workspace, &cwd, &req.spec_path, &config)?;
    let spec = inside(&workspace, &spec, "spec_path")?;
    let plan = resolve_plan_path(&workspace, &cwd, req.plan_path.as_deref(), &config, &spec)?;
    let plan = inside(&workspace, &plan, "plan_path")?;
    let spec_text = std::fs::read_to_string(&spec).ok();
    Ok(Resolved {
        workspace,
        config,
        warnings: loaded.warnings,
        spec,
        plan,
        spec_text,
    })
}

impl Engine {
    /// Creates a `PENDING` run: validates configuration and paths before anything is stored
    /// (a bad config value is refused here, naming key, value and file), picks the name, the
    /// base and merge branches, and wakes the scheduler.
    pub async fn create_run(&self, req: CreateRun) -> Result<CreatedRun, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let r = resolve(&req)?;
        let inner = &self.inner;
        inner
            .vcs
            .repo_root(&r.workspace)
            .await
            .map_err(|e| EngineError::InvalidInput {
                field: "workspace_root".into(),
                detail: format!("{} is not a git repository: {e}", r.workspace.display()),
            })?;
        let slug = naming::spec_slug(&r.spec, r.spec_text.as_deref());
        let base_branch = match &r.config.base_branch {
            Some(b) => b.clone(),
            None => inner.vcs.default_branch(&r.workspace).await?,
        };
        let (name, name_source) = match &req.name {
            Some(given) => {
                let name =
                    naming::sanitize_name(given).ok_or_else(|| EngineError::InvalidInput {
                        field: "name".into(),
                        detail: format!("`{given}` has no usable ASCII characters"),
                    })?;
                (name, req.name_source.unwrap_or(NameSource::SpecSlug))
            }
            None => (
                slug.clone(),
                req.name_source.unwrap_or(r.config.run_naming_mode),
            ),
        };
        let merge_strategy = req.merge_strategy.unwrap_or(r.config.merge_strategy);
        let merge_target_branch = match merge_strategy {
            MergeStrategy::None => None,
            _ => Some(
                req.merge_target_branch
                    .clone()
                    .or_else(|| r.config.merge_target_branch.clone())
                    .unwrap_or_else(|| naming::default_merge_target(&slug)),
            ),
        };
        let now = now_ms();
        let mut run = Run {
            id: RunId::new(),
            name,
            name_source,
            status: RunStatus::Pending,
            exit_reason: None,
            failure: None,
            workspace_root: r.workspace.clone(),
            spec_path: r.spec.clone(),
            plan_path: r.plan.clone(),
            base_branch,
            run_branch: String::new(),
            merge_target_branch,
            merge_strategy,
            worktree_path: PathBuf::new(),
            config: r.config.to_json(),
            iterations_run: 0,
            tasks_done: 0,
            tasks_total: 0,
            created_at: now,
            updated_at: now,
            worker_id: None,
            lease_expires_at: None,
        };
        if let Ok(text) = std::fs::read_to_string(&r.plan) {
            let counts = crate::plan::counts(&text);
            run.tasks_done = counts.done;
            run.tasks_total = counts.total;
        }
        // A name chosen now fixes the branch now; a haiku name is asked for when the run
        // starts, and the branch follows it then.
        let needs_naming = req.name.is_none() && name_source == NameSource::Haiku;
        {
            let lock = inner.prep_lock(&run.workspace_root).await;
            let _guard = lock.lock().await;
            if !needs_naming {
                choose_branch(inner, &mut run, &r.config).await?;
            }
            inner.store.create_run(&run).await?;
        }
        inner
            .emit(NewEvent::new(
                run.id,
                EventKind::RunCreated,
                serde_json::json!({
                    "run_id": run.id,
                    "name": run.name,
                    "name_source": run.name_source,
                    "spec_path": run.spec_path,
                    "plan_path": run.plan_path,
                    "warnings": r.warnings,
                }),
            ))
            .await?;
        inner.wake.notify_one();
        Ok(CreatedRun {
            run,
            warnings: r.warnings,
        })
    }

    /// The prompts a run with these inputs would get, without creating or running anything.
    pub fn preview_prompt(&self, req: &CreateRun) -> Result<PromptPreview, EngineError> {
        let r = resolve(req)?;
        let paths = prompt_paths(
            &r.config,
            &r.workspace,
            &r.spec,
            Some(&r.plan),
            &r.workspace,
            None,
        );
        let implementation = implementation_prompt_text(&r.config, &paths, &r.workspace)?;
        let reviewer = r
            .config
            .reviewer
            .then(|| prompt::reviewer_prompt(&paths, &r.workspace, r.config.completion_mode));
        Ok(PromptPreview {
            implementation,
            reviewer,
            warnings: r.warnings,
        })
    }
}

/// Where the prompt's files are for an agent working in `workdir` (a worktree mirroring the
/// workspace layout): every path is moved from the workspace into `workdir`.
pub(crate) fn prompt_paths(
    cfg: &Config,
    workspace: &Path,
    spec: &Path,
    plan: Option<&Path>,
    workdir: &Path,
    runner_notes: Option<&Path>,
) -> prompt::PromptPaths {
    let rebase = |p: &Path| -> PathBuf {
        match p.strip_prefix(workspace) {
            Ok(rel) => workdir.join(rel),
            Err(_) => p.to_path_buf(),
        }
    };
    let in_work = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            rebase(p)
        } else {
            workdir.join(p)
        }
    };
    prompt::PromptPaths {
        spec: rebase(spec),
        plan: plan.map(rebase),
        runner_notes: runner_notes
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workdir.join(".loop").join("runner-notes.txt")),
        learnings: in_work(&cfg.specs_dir).join("LEARNINGS.md"),
        context_files: cfg.context_files.iter().map(|p| in_work(p)).collect(),
    }
}

/// The implementation prompt of a run's config: the custom prompt file when one is set
/// (`prompt_file`, else `<workdir>/.loop/prompt.txt`), else the default prompt.
pub(crate) fn implementation_prompt_text(
    cfg: &Config,
    paths: &prompt::PromptPaths,
    workdir: &Path,
) -> Result<String, EngineError> {
    let custom = match &cfg.prompt_file {
        Some(p) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                workdir.join(p)
            };
            Some(
                std::fs::read_to_string(&p).map_err(|e| EngineError::InvalidInput {
                    field: "prompt_file".into(),
                    detail: format!("cannot read {}: {e}", p.display()),
                })?,
            )
        }
        None => std::fs::read_to_string(workdir.join(".loop").join("prompt.txt")).ok(),
    };
    Ok(match custom {
        Some(template) => prompt::custom_prompt(&template, paths, workdir, cfg.completion_mode),
        None => prompt::implementation_prompt(paths, workdir, cfg.completion_mode),
    })
}

/// Chooses the run branch (unique among the repository's branches and this workspace's runs)
/// and the worktree path. Serialised per workspace so two runs never pick the same branch.
pub(crate) async fn assign_branch(
    inner: &Inner,
    run: &mut Run,
    cfg: &Config,
) -> Result<(), EngineError> {
    let lock = inner.prep_lock(&run.workspace_root).await;
    let _guard = lock.lock().await;
    choose_branch(inner, run, cfg).await?;
    // Persist while holding the lock so the next run of this workspace sees the branch.
    inner.store.update_run(run).await?;
    Ok(())
}

/// [`assign_branch`] without the lock and without persisting; the caller holds the lock.
async fn choose_branch(inner: &Inner, run: &mut Run, cfg: &Config) -> Result<(), EngineError> {
    let mut existing = inner.vcs.list_branches(&run.workspace_root).await?;
    let others = inner
        .store
        .list_runs(&RunFilter {
            workspace_root: Some(run.workspace_root.clone()),
            ..RunFilter::default()
        })
        .await?;
    existing.extend(
        others
            .into_iter()
            .filter(|o| o.id != run.id && !o.run_branch.is_empty())
            .map(|o| o.run_branch),
    );
    let slug = naming::slugify(&run.name);
    run.run_branch = naming::branch_name(&cfg.run_branch_prefix, &slug, &existing);
    run.worktree_path = naming::render_worktree_path(
        &cfg.worktree_path_template,
        &run.workspace_root,
        &run.run_branch,
    )
    .map_err(|e| EngineError::InvalidInput {
        field: "worktree_path_template".into(),
        detail: e.to_string(),
    })?;
    Ok(())
}
