//! Several hosts on one PostgreSQL (issue 16): claims per second with three hosts competing
//! for one queue, the time from `kill -9` of a run's owner to the run's next agent call on
//! another host, and the store figures at 10k runs on PostgreSQL beside SQLite (event appends
//! one by one, from 16 producers and in batches; listing and inspecting).
//!
//! Needs a PostgreSQL server: `LOOP_BENCH_POSTGRES_URL` or `LOOP_TEST_POSTGRES_URL` (an admin
//! URL; each figure uses a scratch database of its own). `eval "$(bin/pg-test-cluster)"` starts
//! a private one. Without it the benchmark records why it did not run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use loop_engine::Store;
use loop_engine::backend::{ClaimRequest, QueueOrder, RunFilter, StoreWrite};
use loop_engine::domain::{EventKind, NewEvent, Run, RunId, RunStatus, now_ms};
use loop_store::{PgStore, SqliteStore, create_scratch_database};

use crate::Ctx;
use crate::harness::{Daemon, median, ms, now_ns, workspace};
use crate::report::Report;
use crate::scale::finished_run;

/// The lease of the takeover figure.
const TTL_SEC: u64 = 2;

fn admin_url() -> Option<String> {
    std::env::var("LOOP_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("LOOP_TEST_POSTGRES_URL"))
        .ok()
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let Some(admin) = admin_url() else {
        report.info(
            "hosts",
            "not run: no PostgreSQL (set LOOP_BENCH_POSTGRES_URL or LOOP_TEST_POSTGRES_URL; bin/pg-test-cluster starts one)",
            "-".into(),
        );
        return Ok(());
    };
    claims(ctx, report, &admin).await?;
    takeover(ctx, report, &admin).await?;
    store_figures(ctx, report, &admin).await?;
    Ok(())
}

/// A pending run of workspace `/bench/claims-<i % 50>`.
fn pending_run(i: usize) -> Run {
    Run {
        status: RunStatus::Pending,
        exit_reason: None,
        ..finished_run(i, now_ms())
    }
}

/// Three stores (three hosts' connection pools), four claimers each, drain a queue.
async fn claims(ctx: &Ctx, report: &mut Report, admin: &str) -> anyhow::Result<()> {
    let n = if ctx.quick { 300 } else { 5_000 };
    let url = create_scratch_database(admin).await?;
    let hosts = [
        PgStore::connect(&url).await?,
        PgStore::connect(&url).await?,
        PgStore::connect(&url).await?,
    ];
    for i in 0..n {
        hosts[0].create_run(&pending_run(i)).await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (h, store) in hosts.iter().enumerate() {
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let req = ClaimRequest {
                    worker_id: format!("host-{h}:{w}"),
                    now: now_ms(),
                    lease_ms: 60_000,
                    order: QueueOrder::Fifo,
                    skip_workspaces: Vec::new(),
                    skip_runs: Vec::new(),
                };
                let mut claimed = 0usize;
                while store.claim_next_run(&req).await?.is_some() {
                    claimed += 1;
                }
                anyhow::Ok(claimed)
            }));
        }
    }
    let mut claimed = 0;
    for task in tasks {
        claimed += task.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    ensure!(claimed == n, "{claimed} of {n} runs were claimed");
    report.info(
        "hosts",
        &format!("claims per second, 3 hosts × 4 claimers, {n} queued runs"),
        format!("{:.0} claims/s", n as f64 / secs),
    );
    for store in hosts {
        store.close().await;
    }
    Ok(())
}

/// Two loopd on one database: the run's owner is killed with -9 during an agent call; the
/// time until the other loopd's agent call on that run starts.
async fn takeover(ctx: &Ctx, report: &mut Report, admin: &str) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for rep in 0..ctx.reps.min(3) {
        figures.push(one_takeover(ctx, admin, rep).await?);
    }
    report.at_most(
        "hosts",
        &format!("kill -9 of the owner → next agent call on another host (lease TTL {TTL_SEC} s)"),
        median(&figures),
        (2 * TTL_SEC * 1000) as f64,
        "ms",
    );
    Ok(())
}

/// The `start <ns>` lines of the bench agent's log.
fn starts(log: &Path) -> Vec<u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

async fn one_takeover(ctx: &Ctx, admin: &str, rep: usize) -> anyhow::Result<f64> {
    let url = create_scratch_database(admin).await?;
    let dir = ctx.tmp.path().join(format!("hosts-takeover-{rep}"));
    let ws = dir.join("ws");
    let log = dir.join("agent.log");
    let config = format!(
        "executor=command\nagent_cmd={} agent --log {} --sleep-ms 1500 {{prompt_file}}\nclaude_retry_backoff_sec=0\n",
        ctx.bins.bench.display(),
        log.display()
    );
    workspace(&ws, 6, &config).await?;
    let ttl = TTL_SEC.to_string();
    let env = [
        ("LOOPD_STORE", url.as_str()),
        ("LOOPD_LEASE_TTL_SEC", ttl.as_str()),
    ];
    let owner = Daemon::start_with_env(&ctx.bins, &dir.join("a"), &[], &env).await?;
    let id = owner.start_run(&ctx.bins, &ws, "specs/bench.md").await?;
    let run_id: RunId = id.parse()?;
    // The owner's agent is at work (only the owner was up when the run was queued).
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts(&log).is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the first agent call did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = Daemon::start_with_env(&ctx.bins, &dir.join("b"), &[], &env).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = now_ns();
    owner.kill9().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        if let Some(next) = starts(&log).into_iter().find(|t| *t > killed) {
            break next;
        }
        ensure!(
            Instant::now() < deadline,
            "no agent call on the other host within 60 s of the kill; its log:\n{}",
            other.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = next.saturating_sub(killed) as f64 / 1e6;
    crate::say(&format!("  takeover {rep}: {took:.0} ms"));
    // The run finishes on the other host.
    let status = crate::harness::wait_terminal(&other.client, &id, Duration::from_secs(120))
        .await
        .with_context(|| format!("run {run_id} on the surviving host"))?;
    ensure!(status == "COMPLETED", "run {run_id} ended {status}");
    other.stop().await?;
    Ok(took)
}

fn bench_event(run: RunId, i: usize) -> NewEvent {
    NewEvent::new(
        run,
        EventKind::IterationEnd,
        serde_json::json!({ "iteration": i, "status": "ok" }),
    )
}

/// The store figures of one backend with `runs` runs in it.
struct StoreFigures {
    sequential: f64,
    concurrent: f64,
    batched: f64,
    list_ms: f64,
    inspect_ms: f64,
}

async fn figures(
    store: Arc<dyn Store>,
    runs: usize,
    events: usize,
    reps: usize,
) -> anyhow::Result<StoreFigures> {
    let base = now_ms() - 1_000_000;
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        let run = finished_run(i, base + i as i64);
        store.create_run(&run).await?;
        ids.push(run.id);
    }
    let target = ids[runs / 2];
    // One caller, one event per commit.
    let started = Instant::now();
    for i in 0..events {
        store.append_event(&bench_event(target, i)).await?;
    }
    let sequential = events as f64 / started.elapsed().as_secs_f64();
    // 16 producers, each on its own run.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for &run in ids.iter().take(16) {
        let store = Arc::clone(&store);
        let per = events / 16;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                store.append_event(&bench_event(run, i)).await?;
            }
            anyhow::Ok(per)
        }));
    }
    let mut appended = 0;
    for task in tasks {
        appended += task.await??;
    }
    let concurrent = appended as f64 / started.elapsed().as_secs_f64();
    // Batches of 100.
    let started = Instant::now();
    let batches = events.div_ceil(100);
    for b in 0..batches {
        let writes: Vec<StoreWrite> = (0..100)
            .map(|i| StoreWrite::AppendEvent(bench_event(ids[1], b * 100 + i)))
            .collect();
        store.write_batch(&writes).await?;
    }
    let batched = (batches * 100) as f64 / started.elapsed().as_secs_f64();
    // A list page and an inspect (run, steps, its last 200 events).
    let mut list = Vec::new();
    let mut inspect = Vec::new();
    for _ in 0..reps.max(3) {
        let t = Instant::now();
        let page = store
            .list_runs(&RunFilter {
                limit: Some(50),
                ..RunFilter::default()
            })
            .await?;
        ensure!(page.len() == 50, "a list page held {} runs", page.len());
        list.push(ms(t.elapsed()));
        let t = Instant::now();
        store.get_run(target).await?;
        store.list_steps(target).await?;
        let last = store.last_event_seq(target).await?;
        store
            .events_after(target, last.saturating_sub(200), 200)
            .await?;
        inspect.push(ms(t.elapsed()));
    }
    Ok(StoreFigures {
        sequential,
        concurrent,
        batched,
        list_ms: median(&list),
        inspect_ms: median(&inspect),
    })
}

async fn store_figures(ctx: &Ctx, report: &mut Report, admin: &str) -> anyhow::Result<()> {
    let (runs, events) = if ctx.quick {
        (500, 320)
    } else {
        (10_000, 4_800)
    };
    let url = create_scratch_database(admin).await?;
    let pg = PgStore::connect(&url).await?;
    let sqlite_path = ctx.tmp.path().join("hosts-sqlite.db");
    let sqlite = SqliteStore::open(&sqlite_path).await?;
    for (name, store) in [
        ("PostgreSQL", Arc::new(pg) as Arc<dyn Store>),
        ("SQLite", Arc::new(sqlite) as Arc<dyn Store>),
    ] {
        let f = figures(store, runs, events, ctx.reps).await?;
        let at = format!("{name}, {runs} runs");
        report.info(
            "hosts",
            &format!("event append, one caller, one commit each, {at}"),
            format!("{:.0} ev/s", f.sequential),
        );
        report.info(
            "hosts",
            &format!("event append, 16 concurrent producers, {at}"),
            format!("{:.0} ev/s", f.concurrent),
        );
        report.info(
            "hosts",
            &format!("event append, write_batch of 100, {at}"),
            format!("{:.0} ev/s", f.batched),
        );
        report.at_most(
            "hosts",
            &format!("list (a page of 50), {at}"),
            f.list_ms,
            50.0,
            "ms",
        );
        report.at_most(
            "hosts",
            &format!("inspect (run, steps, last 200 events), {at}"),
            f.inspect_ms,
            50.0,
            "ms",
        );
    }
    Ok(())
}
