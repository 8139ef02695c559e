//! The idle daemon (issue 7 §2): RSS right after start and after many finished runs, and CPU
//! time and thread wake-ups (context switches) over an idle window in both states.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use loop_engine::domain::RunStatus;
use loop_http::api::{CreateRunRequest, ListQuery};

use crate::Ctx;
use crate::harness::{Daemon, workspace};
use crate::report::Report;

/// Figures of one idle window.
struct Idle {
    rss_mib: f64,
    cpu_pct: f64,
    switches: u64,
    threads: u64,
}

async fn idle_window(daemon: &Daemon, settle: Duration, window: Duration) -> Idle {
    // Let the last request's work finish first, loopd return its freed heap (it trims once
    // after a quiet second), and tokio's blocking-pool threads reach their 10 s keep-alive
    // and exit (one-offs after activity, not idle timers).
    tokio::time::sleep(settle).await;
    let before = daemon.sample();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = daemon.sample();
    let secs = started.elapsed().as_secs_f64();
    Idle {
        rss_mib: daemon.rss_kib() as f64 / 1024.0,
        // USER_HZ is 100 on Linux: one tick is 10 ms of CPU.
        cpu_pct: (after.cpu_ticks - before.cpu_ticks) as f64 / 100.0 / secs * 100.0,
        switches: before.switches_until(&after).0,
        threads: after.threads,
    }
}

/// Runs `count` one-task runs with the simulated agent, spread over a few workspaces, and
/// waits until every one has ended; returns how many completed.
pub(crate) async fn history(
    ctx: &Ctx,
    daemon: &Daemon,
    count: usize,
    tag: &str,
) -> anyhow::Result<usize> {
    let workspaces = count.clamp(1, 10);
    let mut roots: Vec<PathBuf> = Vec::new();
    for w in 0..workspaces {
        let ws = ctx.tmp.path().join(format!("{tag}-{w}/ws"));
        workspace(&ws, 1, "executor=simulate\n").await?;
        roots.push(ws);
    }
    for i in 0..count {
        daemon
            .client
            .create_run(&CreateRunRequest {
                spec_path: "specs/bench.md".into(),
                workspace_root: roots[i % workspaces].clone(),
                ..CreateRunRequest::default()
            })
            .await?;
    }
    let limit = Duration::from_secs(if ctx.quick { 60 } else { 600 });
    let started = Instant::now();
    loop {
        let open = daemon
            .client
            .list_runs(&ListQuery {
                statuses: vec![RunStatus::Pending, RunStatus::Running],
                limit: Some(1),
                ..ListQuery::default()
            })
            .await?;
        if open.is_empty() {
            break;
        }
        ensure!(started.elapsed() < limit, "runs still open after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A run that did not complete says why, so a missed row can be explained.
    let ended_otherwise = daemon
        .client
        .list_runs(&ListQuery {
            statuses: vec![RunStatus::Failed, RunStatus::Canceled],
            limit: Some(5),
            ..ListQuery::default()
        })
        .await?;
    for run in ended_otherwise {
        crate::say(&format!(
            "  run {} ended {}: {}",
            run.id,
            run.status,
            run.failure.as_deref().unwrap_or("(no failure recorded)")
        ));
    }
    // The API pages at most 1,000 runs at a time.
    let mut done = 0;
    let mut before = None;
    loop {
        let page = daemon
            .client
            .list_runs(&ListQuery {
                statuses: vec![RunStatus::Completed],
                limit: Some(1000),
                before,
                ..ListQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        done += page.len();
    }
    Ok(done)
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let window = Duration::from_secs(if ctx.quick { 1 } else { 60 });
    let runs = if ctx.quick { 5 } else { 1000 };
    crate::say(&format!(
        "idle: {}s windows, then {runs} runs of the simulated agent",
        window.as_secs()
    ));
    let daemon = Daemon::start(
        &ctx.bins,
        &ctx.tmp.path().join("idle-data"),
        &["--max-concurrency", "4"],
    )
    .await?;
    let settle = Duration::from_millis(if ctx.quick { 500 } else { 12_000 });
    let fresh = idle_window(&daemon, settle, window).await;
    let started = Instant::now();
    let completed = history(ctx, &daemon, runs, "idle").await?;
    let took = started.elapsed().as_secs_f64();
    let aged = idle_window(&daemon, settle, window).await;
    let bench = "idle";
    report.at_most(bench, "RSS after start", fresh.rss_mib, 16.0, "MiB");
    report.info(bench, "threads", format!("{}", fresh.threads));
    report.at_most(
        bench,
        &format!(
            "wake-ups (ctx switches) in {} s idle, fresh",
            window.as_secs()
        ),
        fresh.switches as f64,
        0.0,
        "",
    );
    report.info(bench, "CPU idle, fresh", format!("{:.2} %", fresh.cpu_pct));
    report.check(
        bench,
        &format!("{runs} runs (simulated agent) all completed"),
        completed == runs,
        format!("{completed} in {took:.0} s"),
    );
    report.at_most(
        bench,
        &format!("RSS after {runs} finished runs"),
        aged.rss_mib,
        32.0,
        "MiB",
    );
    report.at_most(
        bench,
        &format!(
            "wake-ups in {} s idle, {runs} runs in store",
            window.as_secs()
        ),
        aged.switches as f64,
        0.0,
        "",
    );
    report.at_most(
        bench,
        &format!("CPU idle, {runs} runs in store"),
        aged.cpu_pct,
        fresh.cpu_pct + 0.1,
        "%",
    );
    daemon.stop().await?;
    Ok(())
}
