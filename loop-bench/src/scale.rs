//! Store scale (issue 7 §3): a database filled with many finished runs and events, then
//! `loopctl list`, `loopctl inspect`, `GET /runs/{id}` and an SSE replay of one run's events,
//! at a small and a ten times larger history; plus event append throughput through the store.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use loop_engine::Store;
use loop_engine::domain::{
    EventKind, ExitReason, MergeStrategy, NameSource, NewEvent, Run, RunId, RunStatus, Step,
    StepId, StepPhase, StepStatus, now_ms,
};
use loop_store::SqliteStore;

use crate::Ctx;
use crate::harness::{Daemon, median, ms};
use crate::report::Report;

fn finished_run(i: usize, created_at: i64) -> Run {
    Run {
        id: RunId::new(),
        name: format!("history-{i}"),
        name_source: NameSource::SpecSlug,
        status: RunStatus::Completed,
        exit_reason: Some(ExitReason::CompletePlan),
        failure: None,
        workspace_root: format!("/bench/ws-{}", i % 20).into(),
        spec_path: "specs/bench.md".into(),
        plan_path: "specs/planning/bench-plan.md".into(),
        base_branch: "main".into(),
        run_branch: format!("run/history-{i}"),
        merge_target_branch: Some("agent/bench".into()),
        merge_strategy: MergeStrategy::Squash,
        worktree_path: format!("/bench/wt/history-{i}").into(),
        config: serde_json::json!({ "model": "opus", "iterations": 50, "reviewer": true }),
        iterations_run: 3,
        tasks_done: 3,
        tasks_total: 3,
        created_at,
        updated_at: created_at + 60_000,
        worker_id: None,
        lease_expires_at: None,
    }
}

fn step(run: &Run, seq: u32) -> Step {
    Step {
        id: StepId::new(),
        run_id: run.id,
        seq,
        iteration: seq,
        label: format!("iter-{seq:02}"),
        phase: StepPhase::Implementation,
        status: StepStatus::Succeeded,
        attempt: 1,
        started_at: Some(run.created_at + i64::from(seq) * 1000),
        ended_at: Some(run.created_at + i64::from(seq) * 1000 + 900),
        exit_code: Some(0),
        reason: None,
        prompt_path: Some("logs/loop/prompt.txt".into()),
        output_path: Some(format!("logs/loop/iter-{seq:02}.log").into()),
        head_before: Some("0123456789abcdef0123456789abcdef01234567".into()),
        head_after: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
        agent_pid: Some(4242),
        agent_start_time: Some(1),
        usage: None,
    }
}

/// Appends events `1..=n` to a run in one statement (the fill's fast path); the last one
/// ends the run, as in a real history.
const FILL_EVENTS: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) \
     INSERT INTO events (run_id, seq, step_id, kind, ts, payload) \
     SELECT ?1, x, NULL, CASE WHEN x = ?2 THEN 'RUN_COMPLETED' ELSE 'ITERATION_END' END, ?3 + x, \
            '{\"iteration\":' || x || ',\"status\":\"ok\",\"exit_code\":0,\"duration_ms\":61234,\"head\":\"89abcdef0123\"}' \
     FROM c";

/// Adds runs (with two steps each) until the store holds `runs`, spreading events so it
/// holds about `events`; the first run ever created gets `replay` events.
async fn fill(
    store: &SqliteStore,
    have: usize,
    runs: usize,
    events: usize,
    replay: usize,
    ids: &mut Vec<RunId>,
) -> anyhow::Result<()> {
    let new_runs = runs - have;
    let per_run = events.saturating_sub(if have == 0 { replay } else { 0 }) / new_runs.max(1);
    let base = now_ms() - 365 * 24 * 3600 * 1000;
    let mut fills = Vec::new();
    for i in have..runs {
        let run = finished_run(i, base + i as i64 * 1000);
        store.create_run(&run).await?;
        for seq in 1..=2 {
            store.insert_step(&step(&run, seq)).await?;
        }
        let n = if i == 0 { replay } else { per_run };
        fills.push((run.id, n, run.created_at));
        ids.push(run.id);
    }
    // The store's writer pool has one connection: the transaction takes it after the
    // store's own writes are done.
    let mut tx = store.write_pool().begin().await?;
    for (id, n, ts) in fills {
        sqlx::query(FILL_EVENTS)
            .bind(id.to_string())
            .bind(i64::try_from(n)?)
            .bind(ts)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Events per second appended one by one through the store (each its own commit).
async fn append_rate(store: &SqliteStore, run: RunId, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for i in 0..n {
        store
            .append_event(&NewEvent::new(
                run,
                EventKind::IterationEnd,
                serde_json::json!({ "iteration": i, "status": "ok" }),
            ))
            .await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Median milliseconds of `reps` calls of `f`.
async fn time<F, Fut>(reps: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut t = Vec::new();
    for _ in 0..reps {
        let started = Instant::now();
        f().await?;
        t.push(ms(started.elapsed()));
    }
    Ok(median(&t))
}

/// The measured figures at one history size.
struct Stage {
    list: f64,
    inspect: f64,
    get: f64,
    replay: f64,
    append: f64,
}

async fn measure(
    ctx: &Ctx,
    data: &Path,
    target: RunId,
    other: RunId,
    replay: usize,
    appends: usize,
) -> anyhow::Result<Stage> {
    let append = {
        let store = SqliteStore::open(&data.join("loopd.db")).await?;
        // Appends go to another run, so the replayed run keeps exactly `replay` events.
        let rate = append_rate(&store, other, appends).await?;
        store.close().await;
        rate
    };
    let daemon = Daemon::start(&ctx.bins, data, &[]).await?;
    let reps = ctx.reps.max(if ctx.quick { 2 } else { 5 });
    let cwd = ctx.tmp.path();
    let id = target.to_string();
    let list = time(reps, || async {
        let out = daemon.loopctl(&ctx.bins, cwd, &["list"]).await?;
        ensure!(out.lines().count() > 10, "list printed too little: {out}");
        Ok(())
    })
    .await?;
    let inspect = time(reps, || async {
        let out = daemon.loopctl(&ctx.bins, cwd, &["inspect", &id]).await?;
        ensure!(out.contains("COMPLETED"), "inspect printed no state: {out}");
        Ok(())
    })
    .await?;
    let get = time(reps, || async {
        ensure!(
            daemon.client.get_run(target).await?.id == target,
            "wrong run"
        );
        Ok(())
    })
    .await?;
    let want = replay;
    let replay_ms = time(reps, || async {
        let mut events = daemon.client.events(target, None).await?;
        let mut n = 0;
        while tokio::time::timeout(Duration::from_secs(30), events.next())
            .await??
            .is_some()
        {
            n += 1;
        }
        ensure!(n == want, "replayed {n} events, expected {want}");
        Ok(())
    })
    .await?;
    daemon.stop().await?;
    Ok(Stage {
        list,
        inspect,
        get,
        replay: replay_ms,
        append,
    })
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (stages, replay, appends): (&[(usize, usize)], usize, usize) = if ctx.quick {
        (&[(100, 10_000), (1000, 100_000)], 1000, 1000)
    } else {
        (&[(1000, 100_000), (10_000, 1_000_000)], 10_000, 20_000)
    };
    let data = ctx.tmp.path().join("scale-data");
    std::fs::create_dir_all(&data)?;
    let mut ids = Vec::new();
    let mut have = 0;
    let mut results = Vec::new();
    for &(runs, events) in stages {
        crate::say(&format!("scale: filling {runs} runs, {events} events"));
        let started = Instant::now();
        let store = SqliteStore::open(&data.join("loopd.db")).await?;
        fill(&store, have, runs, events, replay, &mut ids).await?;
        store.close().await;
        have = runs;
        crate::say(&format!(
            "  filled in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        let stage = measure(ctx, &data, ids[0], ids[1], replay, appends).await?;
        results.push((runs, events, stage));
    }
    let bench = "scale";
    for (runs, events, s) in &results {
        let at = format!("{runs} runs/{events} events");
        report.at_most(
            bench,
            &format!("`loopctl list` (default page), {at}"),
            s.list,
            50.0,
            "ms",
        );
        report.at_most(
            bench,
            &format!("`loopctl inspect`, {at}"),
            s.inspect,
            50.0,
            "ms",
        );
        report.info(
            bench,
            &format!("GET /runs/{{id}}, {at}"),
            format!("{:.2} ms", s.get),
        );
        report.at_most(
            bench,
            &format!("SSE replay of {}k events, {at}", replay / 1000),
            s.replay,
            300.0,
            "ms",
        );
        report.at_least(
            bench,
            &format!("event append, one commit each, {at}"),
            s.append,
            20_000.0,
            "ev/s",
        );
    }
    if let [(_, _, small), (_, _, big)] = &results[..] {
        for (what, a, b) in [
            ("list", small.list, big.list),
            ("inspect", small.inspect, big.inspect),
            ("get", small.get, big.get),
            ("replay", small.replay, big.replay),
        ] {
            // Ten times the history: linear growth would be 10x.
            report.at_most(
                bench,
                &format!("growth of {what} time at 10x history"),
                b / a,
                2.0,
                "x",
            );
        }
    }
    Ok(())
}
