//! Per-iteration overhead (issue 7 §1): the same tiny agent run N times by a bare shell loop
//! (arm A) and as an N-task plan through loopd via loopctl (arm B). Reports B/A, the cost per
//! iteration, the gap between one agent call's end and the next call's start (both logged by
//! the agent), and how long after `loopctl run` the first agent call starts.

use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use loop_engine::process::Cmd;

use crate::Ctx;
use crate::agent::gaps;
use crate::harness::{Daemon, median, now_ns, workspace};
use crate::report::Report;

/// Figures of one arm over all repetitions.
#[derive(Default)]
struct Arm {
    secs: Vec<f64>,
    gaps_ms: Vec<f64>,
    first_call_ms: Vec<f64>,
}

fn agent_words(ctx: &Ctx, log: &Path, sleep_ms: u64, review: bool) -> String {
    format!(
        "{} agent --log {} --sleep-ms {sleep_ms}{}",
        ctx.bins.bench.display(),
        log.display(),
        if review { " --review" } else { "" }
    )
}

async fn arm_a(
    ctx: &Ctx,
    rep: usize,
    tasks: usize,
    sleep_ms: u64,
    review: bool,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let dir = ctx.tmp.path().join(format!("a-{review}-{rep}"));
    let ws = dir.join("ws");
    workspace(&ws, tasks, "").await?;
    let log = dir.join("agent.log");
    let calls = if review { tasks * 2 } else { tasks };
    let script = format!(
        "i=0; while [ $i -lt {calls} ]; do {} || exit 1; i=$((i+1)); done",
        agent_words(ctx, &log, sleep_ms, review)
    );
    let started = Instant::now();
    let out = Cmd::new("sh", &ws).args(["-c", &script]).output().await?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(out.success(), "the bare loop failed: {}", out.stderr_text());
    let plan = std::fs::read_to_string(ws.join("specs/planning/bench-plan.md"))?;
    ensure!(!plan.contains("- [ ]"), "the bare loop left open tasks");
    let (g, _) = gaps(&std::fs::read_to_string(&log)?);
    Ok((secs, g))
}

async fn arm_b(
    ctx: &Ctx,
    daemon: &Daemon,
    rep: usize,
    tasks: usize,
    sleep_ms: u64,
    review: bool,
) -> anyhow::Result<(f64, Vec<f64>, f64)> {
    let dir = ctx.tmp.path().join(format!("b-{review}-{rep}"));
    let ws = dir.join("ws");
    let log = dir.join("agent.log");
    let config = format!(
        "executor=command\nagent_cmd={} {{prompt_file}}\nreviewer={review}\n",
        agent_words(ctx, &log, sleep_ms, review)
    );
    workspace(&ws, tasks, &config).await?;
    let t0_ns = now_ns();
    let started = Instant::now();
    let id = daemon.start_run(&ctx.bins, &ws, "specs/bench.md").await?;
    let waited = daemon.loopctl(&ctx.bins, &ws, &["wait", &id]).await;
    let secs = started.elapsed().as_secs_f64();
    if let Err(e) = waited {
        let inspect = daemon
            .loopctl(&ctx.bins, &ws, &["inspect", &id])
            .await
            .unwrap_or_default();
        anyhow::bail!("run {id} did not complete: {e:#}\n{inspect}");
    }
    let (g, first) = gaps(&std::fs::read_to_string(&log)?);
    let calls = if review { tasks * 2 } else { tasks };
    ensure!(
        g.len() + 1 >= calls,
        "loopd made {} agent calls, expected {calls}",
        g.len() + 1
    );
    let first_ms = first
        .map(|f| f.saturating_sub(t0_ns) as f64 / 1e6)
        .unwrap_or(f64::NAN);
    Ok((secs, g, first_ms))
}

async fn compare(
    ctx: &Ctx,
    daemon: &Daemon,
    tasks: usize,
    sleep_ms: u64,
    review: bool,
) -> anyhow::Result<(Arm, Arm)> {
    let (mut a, mut b) = (Arm::default(), Arm::default());
    for rep in 0..ctx.reps {
        let (secs, g) = arm_a(ctx, rep, tasks, sleep_ms, review).await?;
        a.secs.push(secs);
        a.gaps_ms.extend(g);
        let (secs, g, first) = arm_b(ctx, daemon, rep, tasks, sleep_ms, review).await?;
        b.secs.push(secs);
        b.gaps_ms.extend(g);
        b.first_call_ms.push(first);
        crate::say(&format!(
            "    rep {rep}: A {:.2} s, B {:.2} s, first call {first:.1} ms",
            a.secs[rep], b.secs[rep]
        ));
    }
    Ok((a, b))
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let tasks = if ctx.quick { 5 } else { 100 };
    let sleep_ms = if ctx.quick { 0 } else { 100 };
    crate::say(&format!(
        "overhead: {tasks} tasks, {sleep_ms} ms agent, reviewer off, {} reps",
        ctx.reps
    ));
    let daemon = Daemon::start(&ctx.bins, &ctx.tmp.path().join("overhead-data"), &[]).await?;
    let (a, b) = compare(ctx, &daemon, tasks, sleep_ms, false).await?;
    let bench = "overhead";
    let (ma, mb) = (median(&a.secs), median(&b.secs));
    report.info(
        bench,
        &format!("arm A: bare sh loop, {tasks} calls of a {sleep_ms} ms agent"),
        format!("{ma:.2} s"),
    );
    report.info(
        bench,
        "arm B: the same plan via loopctl run + wait",
        format!("{mb:.2} s"),
    );
    report.at_most(bench, "B/A", mb / ma, 1.10, "x");
    report.info(
        bench,
        "(B−A) per iteration",
        format!("{:.1} ms", (mb - ma) * 1000.0 / tasks as f64),
    );
    report.info(
        bench,
        "median gap end→next start, arm A",
        format!("{:.2} ms", median(&a.gaps_ms)),
    );
    report.at_most(
        bench,
        "median gap end→next start, arm B",
        median(&b.gaps_ms),
        3.0,
        "ms",
    );
    report.at_most(
        bench,
        "first agent call after `loopctl run`",
        median(&b.first_call_ms),
        50.0,
        "ms",
    );

    crate::say(&format!(
        "overhead: {tasks} tasks, instant agent, reviewer on, {} reps",
        ctx.reps
    ));
    let (a, b) = compare(ctx, &daemon, tasks, 0, true).await?;
    let (ma, mb) = (median(&a.secs), median(&b.secs));
    report.info(
        bench,
        &format!("reviewer on, instant agent: arm A ({} calls)", tasks * 2),
        format!("{ma:.2} s"),
    );
    report.info(
        bench,
        "reviewer on, instant agent: arm B",
        format!("{mb:.2} s"),
    );
    report.info(
        bench,
        "reviewer on: (B−A) per agent call",
        format!("{:.1} ms", (mb - ma) * 1000.0 / (tasks * 2) as f64),
    );
    report.info(
        bench,
        "reviewer on: median gap, arm A",
        format!("{:.2} ms", median(&a.gaps_ms)),
    );
    report.at_most(
        bench,
        "reviewer on: median gap, arm B",
        median(&b.gaps_ms),
        3.0,
        "ms",
    );
    daemon.stop().await?;
    Ok(())
}
