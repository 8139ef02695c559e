//! loop-bench: measures what the orchestrator costs next to the agent it runs, and how that
//! cost grows with history (issue 7). Drives the real `loopd` and `loopctl` binaries, prints a
//! table and writes `BENCHMARKS.md`. `--quick` is the reduced version CI runs: it keeps the
//! code compiling and working and takes seconds; its figures are not meant to be read.

mod agent;
mod dash;
mod fanout;
mod harness;
mod hosts;
mod idle;
mod output;
mod overhead;
mod procs;
mod report;
mod scale;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::harness::Bins;
use crate::report::Report;

/// Benchmarks of agent-loop.
#[derive(Debug, Parser)]
#[command(name = "loop-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the benchmarks.
#[derive(Debug, clap::Args)]
struct Common {
    /// The reduced version (seconds): small sizes, 1-second idle windows. For CI.
    #[arg(long)]
    quick: bool,
    /// Repetitions per measured figure (medians are quoted).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Where loopd and loopctl are [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where to write the Markdown report [default: BENCHMARKS.md for `all` without --quick].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything below, in order.
    All(Common),
    /// Per-iteration overhead: bare shell loop vs loopd, gaps, first-call latency.
    Overhead(Common),
    /// Idle daemon: RSS, CPU and wake-ups, fresh and after many runs.
    Idle(Common),
    /// Store scale: list, inspect, get and replay with 1k/10k runs, 100k/1M events.
    Scale(Common),
    /// Fan-out to many SSE clients, and many concurrent runs.
    Fanout(Common),
    /// An agent printing hundreds of megabytes.
    Output(Common),
    /// The dashboard at 10,000 runs: list server time and first paint in Chromium.
    Dash(Common),
    /// loopd's CPU per agent call with ~200 and with 3,000 more processes on the machine.
    Procs(Common),
    /// Several hosts on one PostgreSQL: claims/s, kill -9 takeover, PostgreSQL beside SQLite.
    Hosts(Common),
    /// The tiny agent the benchmarks run (not for humans).
    #[command(hide = true)]
    Agent(agent::AgentArgs),
}

/// What every benchmark gets.
pub(crate) struct Ctx {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) bins: Bins,
    /// A scratch directory, removed at the end.
    pub(crate) tmp: tempfile::TempDir,
}

/// Records a benchmark that could not finish as a missed row and goes on with the others, so
/// one failure still leaves every other figure in the report.
fn ran(report: &mut Report, bench: &str, result: anyhow::Result<()>) {
    if let Err(e) = result {
        let detail = format!("{e:#}").replace('\n', " ");
        report.check(bench, "benchmark ran to the end", false, "failed".into());
        report.notes.push(format!("{bench} failed: {detail}"));
    }
}

/// Prints one line of progress or results.
pub(crate) fn say(line: &str) {
    #[expect(clippy::print_stdout, reason = "the benchmark's table is its output")]
    {
        println!("{line}");
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Agent(args) = cli.command {
        // The agent is started hundreds of times: a single-threaded runtime starts fastest.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(agent::run(args));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(cli.command))
}

async fn bench(command: Command) -> anyhow::Result<()> {
    let (which, common) = match command {
        Command::All(c) => ("all", c),
        Command::Overhead(c) => ("overhead", c),
        Command::Idle(c) => ("idle", c),
        Command::Scale(c) => ("scale", c),
        Command::Fanout(c) => ("fanout", c),
        Command::Output(c) => ("output", c),
        Command::Procs(c) => ("procs", c),
        Command::Hosts(c) => ("hosts", c),
        Command::Dash(c) => ("dash", c),
        Command::Agent(_) => unreachable!("handled in main"),
    };
    let ctx = Ctx {
        quick: common.quick,
        reps: if common.quick {
            common.reps.min(2)
        } else {
            common.reps.max(1)
        },
        bins: Bins::locate(common.bin_dir.as_deref())?,
        tmp: tempfile::Builder::new().prefix("loop-bench-").tempdir()?,
    };
    let started = Instant::now();
    let mut report = Report::default();
    say(&format!(
        "loop-bench {which}{} (loopd: {})",
        if ctx.quick { " --quick" } else { "" },
        ctx.bins.loopd.display()
    ));
    let all = which == "all";
    if all || which == "overhead" {
        let result = overhead::run(&ctx, &mut report).await;
        ran(&mut report, "overhead", result);
    }
    if all || which == "idle" {
        let result = idle::run(&ctx, &mut report).await;
        ran(&mut report, "idle", result);
    }
    if all || which == "scale" {
        let result = scale::run(&ctx, &mut report).await;
        ran(&mut report, "scale", result);
    }
    if all || which == "fanout" {
        let result = fanout::run(&ctx, &mut report).await;
        ran(&mut report, "fanout", result);
    }
    if all || which == "output" {
        let result = output::run(&ctx, &mut report).await;
        ran(&mut report, "output", result);
    }
    if all || which == "procs" {
        let result = procs::run(&ctx, &mut report).await;
        ran(&mut report, "procs", result);
    }
    if all || which == "hosts" {
        let result = hosts::run(&ctx, &mut report).await;
        ran(&mut report, "hosts", result);
    }
    if all || which == "dash" {
        let result = dash::run(&ctx, &mut report).await;
        ran(&mut report, "dash", result);
    }
    let elapsed = started.elapsed().as_secs_f64();
    say("");
    say(&report.table());
    say(&format!("total: {elapsed:.0} s"));
    for n in &report.notes {
        say(n);
    }
    let out = common
        .out
        .or_else(|| (all && !ctx.quick).then(|| PathBuf::from("BENCHMARKS.md")));
    if let Some(out) = out {
        let mode = if ctx.quick { "--quick" } else { "full" };
        std::fs::write(&out, report.markdown(mode, elapsed).await)
            .with_context(|| format!("cannot write {}", out.display()))?;
        say(&format!("wrote {}", out.display()));
    }
    let failed = report.notes.iter().any(|n| n.contains(" failed: "));
    anyhow::ensure!(!failed, "a benchmark failed (see above)");
    Ok(())
}
