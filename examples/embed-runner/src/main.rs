//! embed-runner: runs one spec and plan to completion in-process with loop-engine and the
//! SQLite store, printing progress: the smallest complete embedding of the engine.
//!
//! ```text
//! embed-runner <workspace> <spec> [plan] [--db FILE] [--simulate] [--set key=value]...
//! ```
//!
//! `--simulate` uses the built-in simulated agent (no model, no network); without it the agent
//! is the one the workspace's config names (Claude Code by default). Exit code: 0 completed,
//! 1 failed, 2 canceled.
#![expect(
    clippy::print_stdout,
    reason = "a command-line example prints its progress"
)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use loop_engine::domain::{EventKind, RunStatus};
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::SimulatedAgent;
use loop_store::SqliteStore;

struct Args {
    workspace: PathBuf,
    spec: PathBuf,
    plan: Option<PathBuf>,
    db: Option<PathBuf>,
    simulate: bool,
    overrides: Vec<(String, String)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut positional = Vec::new();
    let mut db = None;
    let mut simulate = false;
    let mut overrides = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--db" => db = Some(PathBuf::from(it.next().context("--db needs a file")?)),
            "--simulate" => simulate = true,
            "--set" => {
                let kv = it.next().context("--set needs key=value")?;
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--set `{kv}`: expected key=value"))?;
                overrides.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-h" | "--help" => {
                println!(
                    "usage: embed-runner <workspace> <spec> [plan] [--db FILE] [--simulate] [--set key=value]..."
                );
                std::process::exit(0);
            }
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let mut positional = positional.into_iter();
    let workspace = positional.next().context("missing <workspace>")?;
    let spec = positional.next().context("missing <spec>")?;
    Ok(Args {
        workspace: std::path::absolute(&workspace)
            .with_context(|| format!("bad workspace path {}", workspace.display()))?,
        spec,
        plan: positional.next(),
        db,
        simulate,
        overrides,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // The store: a database file of your own, or a throw-away one.
    let scratch = tempfile::tempdir().context("cannot create a temp dir")?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| scratch.path().join("embed.db"));
    let store = SqliteStore::open(&db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let mut builder = Engine::builder().store(store);
    if args.simulate {
        builder = builder.executor(SimulatedAgent::new());
    }
    let engine = builder.build()?;

    let created = engine
        .create_run(CreateRun {
            workspace_root: args.workspace.clone(),
            spec_path: args.spec.clone(),
            plan_path: args.plan.clone(),
            overrides: args.overrides.clone(),
            ..CreateRun::default()
        })
        .await?;
    for w in &created.warnings {
        println!("warning: {w}");
    }
    let run = created.run;
    println!("run {} ({}) on {}", run.id, run.name, run.run_branch);

    // Follow the run's events while it executes.
    let mut events = engine.subscribe_events(run.id);
    let printer = tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            let msg = ev
                .payload
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            match ev.kind {
                EventKind::IterationStart
                | EventKind::IterationEnd
                | EventKind::VerifyEnd
                | EventKind::WatchdogRewrite
                | EventKind::MergeDone
                | EventKind::RunFailed
                | EventKind::RunCompleted
                | EventKind::RunCanceled => {
                    let iter = ev
                        .payload
                        .get("iteration")
                        .and_then(|i| i.as_str())
                        .unwrap_or("");
                    println!("  {:<24} {iter:>6} {msg}", ev.kind.as_str());
                }
                _ => {}
            }
        }
    });

    let started = Instant::now();
    engine.run_until_idle().await?;
    let elapsed = started.elapsed();
    printer.abort();

    let run = engine.get_run(run.id).await?;
    let steps = engine.steps(run.id).await?;
    let agent_ms: u64 = steps
        .iter()
        .filter_map(|s| Some(u64::try_from(s.ended_at? - s.started_at?).unwrap_or(0)))
        .sum();
    println!(
        "{} ({}) after {} iterations, {}/{} tasks, {} ms",
        run.status,
        run.exit_reason
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        run.iterations_run,
        run.tasks_done,
        run.tasks_total,
        elapsed.as_millis()
    );
    if let Some(f) = &run.failure {
        println!("reason: {f}");
    }
    println!(
        "steps: {} (time inside steps {agent_ms} ms); artifacts: {}",
        steps.len(),
        run.workspace_root
            .join("logs/loop")
            .join(format!("run-{}", run.id))
            .display()
    );
    std::process::exit(match run.status {
        RunStatus::Completed => 0,
        RunStatus::Canceled => 2,
        _ => 1,
    })
}
