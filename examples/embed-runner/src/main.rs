//! embed-runner: runs one spec and plan to completion in-process with loop-engine and the
//! SQLite store, printing progress: the smallest complete embedding of the engine.
//!
//! ```text
//! embed-runner <workspace> <spec> [plan] [--db FILE] [--simulate] [--set key=value]...
//! ```
//!
//! `--simulate` uses the built-in simulated agent (no model, no network); without it the agent
//! is the one the workspace's config names (Claude Code by default). Exit code: 0 completed,
//! 1 failed or bad arguments, 2 canceled.
#![expect(
    clippy::print_stdout,
    reason = "a command-line example prints its progress"
)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use loop_engine::domain::{EventPayload, RunStatus};
use loop_engine::engine::{CreateRun, Engine};
use loop_engine::impls::SimulatedAgent;
use loop_store::SqliteStore;

/// Runs one spec and plan to completion in-process, printing progress.
#[derive(Debug, Parser)]
#[command(name = "embed-runner", version, about)]
struct Args {
    /// The git repository to work on.
    workspace: PathBuf,
    /// The spec, relative to the workspace.
    spec: PathBuf,
    /// The plan (default: the one the spec's name implies).
    plan: Option<PathBuf>,
    /// The SQLite database (default: a throw-away one).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Use the built-in simulated agent (no model, no network).
    #[arg(long)]
    simulate: bool,
    /// Override a config key for this run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    overrides: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected key=value"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// The arguments, with a usage error exiting 1 (2 means a canceled run).
fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args::try_parse().unwrap_or_else(|e| {
        let code = i32::from(e.use_stderr());
        // Nothing sensible is left to do if the terminal is gone.
        let _ = e.print();
        std::process::exit(code)
    });
    args.workspace = std::path::absolute(&args.workspace)
        .with_context(|| format!("bad workspace path {}", args.workspace.display()))?;
    Ok(args)
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
            // Payloads are typed: match on what the engine emitted instead of reading JSON keys.
            let (iter, msg) = match ev.typed_payload() {
                Ok(
                    EventPayload::IterationStart(line)
                    | EventPayload::IterationEnd(line)
                    | EventPayload::VerifyEnd(line),
                ) => (line.iteration, line.message),
                Ok(EventPayload::WatchdogRewrite(w)) => {
                    (String::new(), format!("{}: {}", w.signal, w.detail))
                }
                Ok(EventPayload::MergeDone(m)) => {
                    (String::new(), format!("{} into {}", m.outcome, m.target))
                }
                Ok(EventPayload::MergePending(m)) => (
                    String::new(),
                    format!("into {} waits: {}", m.target, m.reason),
                ),
                Ok(EventPayload::RunFailed(f)) => (String::new(), f.reason),
                Ok(EventPayload::RunCompleted(c)) => (String::new(), c.mode),
                Ok(EventPayload::RunCanceled(_)) => (String::new(), String::new()),
                _ => continue,
            };
            println!("  {:<24} {iter:>6} {msg}", ev.kind.as_str());
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
