//! Creating runs: configuration, spec/plan resolution, naming, branch and worktree choice;
//! and previewing the prompt a run would get.

use std::path::{Path, PathBuf};

use crate::artifacts::RunFolder;
use crate::backend::RunFilter;
use crate::config::{
    Config, ConfigLayers, ExecutorKind, MAX_DOC_FILE_BYTES, MAX_PROMPT_FILE_BYTES, read_user_file,
    resolve_inside, resolve_path, resolve_plan_path, resolve_spec_path,
};
use crate::domain::{
    EventPayload, MergeStrategy, NameSource, NewEvent, Run, RunId, RunStatus, now_ms, payloads,
};
use crate::engine::core::Engine;
use crate::engine::inner::Inner;
use crate::error::{ConfigError, EngineError};
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
    /// Which agent would run the steps ([`Config::agent_summary`]).
    pub agent: String,
}

/// The resolved inputs of a run.
struct Resolved {
    workspace: PathBuf,
    config: Config,
    warnings: Vec<String>,
    spec: PathBuf,
    plan: PathBuf,
    spec_text: String,
    plan_text: String,
}

/// Refuses `path` when it resolves outside `root`, naming `key` and the path as the user gave
/// it (`given`), not the candidate it was found as.
fn contained(root: &Path, found: &Path, given: &Path, key: &str) -> Result<PathBuf, EngineError> {
    resolve_inside(root, found, key).map_err(|e| match e {
        ConfigError::OutsideRoot {
            key,
            resolved,
            root,
            ..
        } => EngineError::Config(ConfigError::OutsideRoot {
            key,
            path: given.to_path_buf(),
            resolved,
            root,
        }),
        other => EngineError::Config(other),
    })
}

/// Reads a spec or plan at creation: a regular file of at most [`MAX_DOC_FILE_BYTES`].
fn read_doc(key: &str, path: &Path) -> Result<String, EngineError> {
    read_user_file(key, path, MAX_DOC_FILE_BYTES)?.ok_or_else(|| {
        EngineError::Config(ConfigError::UnusableFile {
            key: key.to_owned(),
            path: path.to_path_buf(),
            reason: "it disappeared while the run was being created".to_owned(),
        })
    })
}

/// Checks the paths of a configuration against the workspace (symlinks followed): `log_dir`,
/// `prompt_file` and `context_files` must stay inside it.
/// Refuses agent resource limits this host cannot apply (no cgroups, or not the controller).
fn check_agent_limits(config: &Config) -> Result<(), EngineError> {
    let limits = config
        .agent_limits()
        .map_err(|detail| EngineError::InvalidInput {
            field: detail
                .split(':')
                .next()
                .unwrap_or("agent_memory_max")
                .to_owned(),
            detail,
        })?;
    if config.executor == crate::config::ExecutorKind::Simulate {
        // The simulated agent runs no process.
        return Ok(());
    }
    limits
        .check_supported()
        .map_err(|detail| EngineError::InvalidInput {
            field: detail
                .split([' ', ',', ':'])
                .find(|w| w.starts_with("agent_"))
                .unwrap_or("agent_memory_max")
                .to_owned(),
            detail,
        })
}

fn check_config_paths(config: &Config, workspace: &Path) -> Result<(), EngineError> {
    resolve_inside(workspace, &config.log_dir, "log_dir")?;
    if let Some(p) = &config.prompt_file {
        resolve_inside(workspace, p, "prompt_file")?;
    }
    for p in &config.context_files {
        resolve_inside(workspace, p, "context_files")?;
    }
    Ok(())
}

/// The folder run worktrees must stay in: the workspace's parent (the workspace itself when it
/// has none).
fn worktree_root(workspace: &Path) -> &Path {
    workspace.parent().unwrap_or(workspace)
}

/// Renders `worktree_path_template` for `branch` and refuses a result outside
/// [`worktree_root`], naming the key.
fn worktree_path(cfg: &Config, workspace: &Path, branch: &str) -> Result<PathBuf, EngineError> {
    let rendered = naming::render_worktree_path(&cfg.worktree_path_template, workspace, branch)
        .map_err(|e| EngineError::InvalidInput {
            field: "worktree_path_template".into(),
            detail: e.to_string(),
        })?;
    let resolved = resolve_inside(worktree_root(workspace), &rendered, "worktree_path_template")
        .map_err(|e| match e {
            ConfigError::OutsideRoot { resolved, root, .. } => EngineError::InvalidInput {
                field: "worktree_path_template".into(),
                detail: format!(
                    "`{}` puts the worktree at {}, outside {} (worktrees must stay in the workspace's parent folder)",
                    cfg.worktree_path_template,
                    resolved.display(),
                    root.display()
                ),
            },
            other => EngineError::Config(other),
        })?;
    if resolved.as_path() == workspace {
        return Err(EngineError::InvalidInput {
            field: "worktree_path_template".into(),
            detail: format!(
                "`{}` puts the worktree at the workspace itself",
                cfg.worktree_path_template
            ),
        });
    }
    Ok(resolved)
}

/// Resolves and checks everything a run is created from. Blocking (file system, bounded
/// reads): call it through `spawn_blocking`.
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
    let workspace = resolve_path(Path::new("/"), &req.workspace_root);
    let loaded = Config::load(&ConfigLayers {
        workspace_root: workspace.clone(),
        config_file: req.config_file.clone(),
        env_config_file: None,
        json_overrides: req.json_overrides.clone(),
        overrides: req.overrides.clone(),
    })?;
    let config = loaded.config;
    config.validate()?;
    check_config_paths(&config, &workspace)?;
    check_agent_limits(&config)?;
    if let Some(branch) = &req.merge_target_branch
        && let Some(rule) = naming::branch_name_problem(branch)
    {
        return Err(EngineError::InvalidInput {
            field: "merge_target_branch".into(),
            detail: format!("`{branch}` is not a valid branch name: {rule}"),
        });
    }
    // The template is checked now with a stand-in branch; the real branch is checked again
    // when it is chosen.
    worktree_path(
        &config,
        &workspace,
        &format!("{}name", config.run_branch_prefix),
    )?;
    let cwd = req.cwd.clone().unwrap_or_else(|| workspace.clone());
    let spec = resolve_spec_path(&workspace, &cwd, &req.spec_path, &config)?;
    let spec = contained(&workspace, &spec, &req.spec_path, "spec_path")?;
    let plan = resolve_plan_path(&workspace, &cwd, req.plan_path.as_deref(), &config, &spec)?;
    let plan_given = req.plan_path.clone().unwrap_or_else(|| plan.clone());
    let plan = contained(&workspace, &plan, &plan_given, "plan_path")?;
    let spec_text = read_doc("spec_path", &spec)?;
    let plan_text = read_doc("plan_path", &plan)?;
    Ok(Resolved {
        workspace,
        config,
        warnings: loaded.warnings,
        spec,
        plan,
        spec_text,
        plan_text,
    })
}

/// Writes the run's plan snapshot ([`RunFolder::plan_snapshot`]) into its workspace run folder.
async fn write_plan_snapshot(run: &Run, cfg: &Config, plan: &str) -> Result<PathBuf, EngineError> {
    let path = RunFolder::workspace(&run.workspace_root, &cfg.log_dir, run.id).plan_snapshot();
    let bytes = plan.as_bytes().to_vec();
    let target = path.clone();
    tokio::task::spawn_blocking(move || crate::artifacts::write_atomic(&target, &bytes))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| EngineError::InvalidInput {
            field: "log_dir".into(),
            detail: format!("cannot write the plan snapshot {}: {e}", path.display()),
        })?;
    Ok(path)
}

/// [`resolve`] off the async workers.
async fn resolve_blocking(req: &CreateRun) -> Result<Resolved, EngineError> {
    let req = req.clone();
    tokio::task::spawn_blocking(move || resolve(&req))
        .await
        .map_err(|e| EngineError::InvalidInput {
            field: "request".into(),
            detail: format!("reading the run's files was interrupted: {e}"),
        })?
}

/// Refuses a run the Claude CLI would refuse at its first step: as root, the CLI rejects
/// `--dangerously-skip-permissions` unless `IS_SANDBOX` is exactly `1`. Only for the
/// configured Claude executor (an injected executor decides for itself).
fn check_sandbox(inner: &Inner, cfg: &Config) -> Result<(), EngineError> {
    if inner.executor.is_some() || cfg.executor != ExecutorKind::Claude {
        return Ok(());
    }
    match sandbox_problem() {
        Some(detail) => Err(EngineError::InvalidInput {
            field: "IS_SANDBOX".into(),
            detail,
        }),
        None => Ok(()),
    }
}

/// Why the Claude CLI would refuse to start under this process (root without
/// `IS_SANDBOX=1`), with what to set; `None` when it would start. loopd warns with it at
/// start-up, and run creation refuses `executor=claude` runs with it.
pub fn sandbox_problem() -> Option<String> {
    let is_sandbox = std::env::var_os("IS_SANDBOX").map(|v| v.to_string_lossy().into_owned());
    crate::impls::root_refusal(crate::process::effective_uid(), is_sandbox.as_deref())
}

impl Engine {
    /// Creates a `PENDING` run: validates configuration and paths before anything is stored
    /// (a bad config value is refused here, naming key, value and file), picks the name, the
    /// base and merge branches, and wakes the scheduler.
    pub async fn create_run(&self, req: CreateRun) -> Result<CreatedRun, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let r = resolve_blocking(&req).await?;
        let inner = &self.inner;
        check_sandbox(inner, &r.config)?;
        inner
            .vcs
            .repo_root(&r.workspace)
            .await
            .map_err(|e| EngineError::InvalidInput {
                field: "workspace_root".into(),
                detail: format!("{} is not a git repository: {e}", r.workspace.display()),
            })?;
        let slug = naming::spec_slug(&r.spec, Some(&r.spec_text));
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
            lease_epoch: 0,
            review_status: crate::domain::ReviewStatus::Pending,
            review_action_at: None,
            merge_commit: None,
            pr_url: None,
        };
        let counts = crate::plan::counts(&r.plan_text);
        run.tasks_done = counts.done;
        run.tasks_total = counts.total;
        // A name chosen now fixes the branch now; a haiku name is asked for when the run
        // starts, and the branch follows it then.
        let needs_naming = req.name.is_none() && name_source == NameSource::Haiku;
        // The plan is fixed now: the worktree's plan is seeded from this snapshot when the
        // run starts, whatever happened to the workspace's plan in between.
        let snapshot = write_plan_snapshot(&run, &r.config, &r.plan_text).await?;
        let created = {
            let lock = inner.prep_lock(&run.workspace_root).await;
            let _guard = lock.lock().await;
            let chosen = if needs_naming {
                Ok(())
            } else {
                choose_branch(inner, &mut run, &r.config).await
            };
            match chosen {
                Ok(()) => inner
                    .store
                    .create_run(&run)
                    .await
                    .map_err(EngineError::from),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = created {
            let folder = snapshot.parent().map(Path::to_path_buf);
            if let Some(folder) = folder {
                let _ = tokio::fs::remove_dir_all(folder).await;
            }
            return Err(e);
        }
        inner
            .emit(NewEvent::typed(
                run.id,
                &EventPayload::RunCreated(payloads::RunCreated {
                    run_id: run.id,
                    name: run.name.clone(),
                    name_source: run.name_source,
                    spec_path: run.spec_path.clone(),
                    plan_path: run.plan_path.clone(),
                    warnings: r.warnings.clone(),
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
    /// The files are read off the async workers.
    pub async fn preview_prompt(&self, req: &CreateRun) -> Result<PromptPreview, EngineError> {
        let req = req.clone();
        tokio::task::spawn_blocking(move || preview(&resolve(&req)?))
            .await
            .map_err(|e| EngineError::InvalidInput {
                field: "request".into(),
                detail: format!("reading the run's files was interrupted: {e}"),
            })?
    }
}

/// The prompts of resolved inputs (reads the prompt file: blocking).
fn preview(r: &Resolved) -> Result<PromptPreview, EngineError> {
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
        warnings: r.warnings.clone(),
        agent: r.config.agent_summary(),
    })
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
/// (`prompt_file`, else `<workdir>/.loop/prompt.txt`), else the default prompt. A relative
/// prompt file must resolve inside `workdir` (an absolute one was checked against the
/// workspace when the run was created); either must be a regular file of at most
/// [`MAX_PROMPT_FILE_BYTES`].
pub(crate) fn implementation_prompt_text(
    cfg: &Config,
    paths: &prompt::PromptPaths,
    workdir: &Path,
) -> Result<String, EngineError> {
    let custom = match &cfg.prompt_file {
        Some(p) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                resolve_inside(workdir, p, "prompt_file")?
            };
            Some(
                read_user_file("prompt_file", &path, MAX_PROMPT_FILE_BYTES)?.ok_or_else(|| {
                    EngineError::InvalidInput {
                        field: "prompt_file".into(),
                        detail: format!("cannot read {}: no such file", path.display()),
                    }
                })?,
            )
        }
        None => {
            let default = Path::new(".loop").join("prompt.txt");
            let path = resolve_inside(workdir, &default, ".loop/prompt.txt")?;
            read_user_file(".loop/prompt.txt", &path, MAX_PROMPT_FILE_BYTES)?
        }
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
    run.worktree_path = worktree_path(cfg, &run.workspace_root, &run.run_branch)?;
    Ok(())
}
