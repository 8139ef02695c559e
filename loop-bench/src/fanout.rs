//! Fan-out and concurrency (issue 7 §4): many clients tailing one busy run's output (delivery
//! latency from the agent's own timestamp in each line, and lost lines), then many runs of
//! an instant agent under `max_concurrency=8`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use loop_http::client::OutputItem;
use tokio::sync::Barrier;

use crate::Ctx;
use crate::harness::{Daemon, now_ns, percentile, wait_terminal, workspace};
use crate::idle::history;
use crate::report::Report;

/// Latencies (ms) of every line one client received, and how many distinct lines it saw.
async fn tail(
    daemon: Arc<Daemon>,
    id: loop_engine::domain::RunId,
    lines: u64,
    ready: Arc<Barrier>,
) -> anyhow::Result<(Vec<f64>, u64)> {
    let mut stream = daemon.client.output(id).await;
    ready.wait().await;
    let stream = stream.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut latencies = Vec::with_capacity(usize::try_from(lines).unwrap_or(0));
    let mut seen = vec![false; usize::try_from(lines).unwrap_or(0)];
    let mut distinct = 0;
    let mut partial = String::new();
    while distinct < lines {
        let Some(item) = tokio::time::timeout(Duration::from_secs(60), stream.next()).await??
        else {
            break;
        };
        let OutputItem::Chunk { text, .. } = item else {
            continue;
        };
        let now = now_ns();
        partial.push_str(&text);
        while let Some(nl) = partial.find('\n') {
            let line: String = partial.drain(..=nl).collect();
            let Some((n, ns)) = line
                .trim()
                .strip_prefix('L')
                .and_then(|l| l.split_once(' '))
            else {
                continue;
            };
            if let (Ok(n), Ok(ns)) = (n.parse::<usize>(), ns.parse::<u128>()) {
                if let Some(s) = seen.get_mut(n)
                    && !*s
                {
                    *s = true;
                    distinct += 1;
                }
                latencies.push(now.saturating_sub(ns) as f64 / 1e6);
            }
        }
    }
    Ok((latencies, distinct))
}

async fn fan_out(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (clients, lines) = if ctx.quick { (20, 200) } else { (200, 2000) };
    crate::say(&format!(
        "fanout: {clients} clients tailing {lines} lines (1 per ms)"
    ));
    let dir = ctx.tmp.path().join("fanout");
    let ws = dir.join("ws");
    let (log, go) = (dir.join("agent.log"), dir.join("go"));
    workspace(
        &ws,
        1,
        &format!(
            "executor=command\nagent_cmd={} agent --log {} --go {} --lines {lines} --line-interval-us 1000 {{prompt_file}}\n",
            ctx.bins.bench.display(),
            log.display(),
            go.display()
        ),
    )
    .await?;
    let daemon = Arc::new(Daemon::start(&ctx.bins, &dir.join("data"), &[]).await?);
    let id_text = daemon.start_run(&ctx.bins, &ws, "specs/bench.md").await?;
    let id: loop_engine::domain::RunId = id_text.parse()?;
    let started = Instant::now();
    while !log.exists() {
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the agent never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(tail(daemon.clone(), id, lines, ready.clone())))
        .collect();
    ready.wait().await;
    std::fs::write(&go, "go")?;
    let mut all = Vec::new();
    let mut complete = 0;
    for t in tasks {
        let (lat, distinct) = t.await??;
        all.extend(lat);
        if distinct == lines {
            complete += 1;
        }
    }
    let status = wait_terminal(&daemon.client, &id_text, Duration::from_secs(60)).await?;
    let bench = "fanout";
    report.info(
        bench,
        &format!("{clients} clients: p50 delivery latency"),
        format!("{:.2} ms", percentile(&all, 50.0)),
    );
    report.at_most(
        bench,
        &format!("{clients} clients: p99 delivery latency"),
        percentile(&all, 99.0),
        50.0,
        "ms",
    );
    report.check(
        bench,
        &format!("{clients} clients got all {lines} lines"),
        complete == clients,
        format!("{complete}/{clients}"),
    );
    report.check(
        bench,
        "the busy run completed",
        status == "COMPLETED",
        status,
    );
    if let Ok(d) = Arc::try_unwrap(daemon) {
        d.stop().await?;
    }
    Ok(())
}

async fn concurrency(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let runs = if ctx.quick { 8 } else { 50 };
    crate::say(&format!(
        "concurrency: {runs} runs of the simulated agent, max_concurrency=8"
    ));
    let daemon = Daemon::start(
        &ctx.bins,
        &ctx.tmp.path().join("concurrency-data"),
        &["--max-concurrency", "8"],
    )
    .await?;
    let started = Instant::now();
    let completed = history(ctx, &daemon, runs, "concurrency").await?;
    let secs = started.elapsed().as_secs_f64();
    let log = daemon.log_text();
    daemon.stop().await?;
    let bench = "concurrency";
    report.info(
        bench,
        &format!("{runs} runs, max_concurrency=8: total time"),
        format!("{secs:.1} s"),
    );
    report.check(
        bench,
        "every run COMPLETED",
        completed == runs,
        format!("{completed}/{runs}"),
    );
    let locked = log.matches("database is locked").count();
    report.check(
        bench,
        "no \"database is locked\" in loopd's log",
        locked == 0,
        format!("{locked} found"),
    );
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    fan_out(ctx, report).await?;
    concurrency(ctx, report).await
}
