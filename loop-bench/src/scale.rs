//! Store scale (issue 7 §3): a database filled with many finished runs and events, then
//! `loopctl list`, `loopctl inspect`, `GET /runs/{id}` and an SSE replay of one run's events,
//! at a small and a ten times larger history; plus event append throughput through the store
//! (one caller one by one, 16 concurrent producers sharing group commits, batches) and the
//! cost of one step's bookkeeping written one by one or as one batch.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use loop_engine::Store;
use loop_engine::backend::StoreWrite;
use loop_engine::domain::{
    ArtifactKind, ArtifactLocation, EventKind, ExitReason, MergeStrategy, NameSource, NewArtifact,
    NewEvent, Run, RunId, RunStatus, Step, StepId, StepPhase, StepStatus, now_ms,
};
use loop_store::SqliteStore;

use crate::Ctx;
use crate::harness::{Daemon, median, ms};
use crate::report::Report;

pub(crate) fn finished_run(i: usize, created_at: i64) -> Run {
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
        lease_epoch: 0,
        review_status: loop_engine::domain::ReviewStatus::Pending,
        review_action_at: None,
        merge_commit: None,
        pr_url: None,
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
        resources: None,
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
pub(crate) async fn fill(
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

fn bench_event(run: RunId, i: usize) -> NewEvent {
    NewEvent::new(
        run,
        EventKind::IterationEnd,
        serde_json::json!({ "iteration": i, "status": "ok" }),
    )
}

/// Events per second appended one by one by a single caller (each its own commit: with
/// nobody else appending, every group is one event).
async fn append_rate(store: &SqliteStore, run: RunId, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for i in 0..n {
        store.append_event(&bench_event(run, i)).await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// How many producers append at once in the concurrent figure: many runs emitting output.
const PRODUCERS: usize = 16;

/// Events per second when [`PRODUCERS`] tasks, each appending to its own run one event at a
/// time, share one store (and so its group commits); `n` events in all. Checks that every
/// run got its events numbered 1..=n/PRODUCERS.
async fn concurrent_append_rate(store: &SqliteStore, n: usize) -> anyhow::Result<f64> {
    let per_producer = n / PRODUCERS;
    let base = now_ms();
    let mut runs = Vec::new();
    for p in 0..PRODUCERS {
        let run = Run {
            name: format!("producer-{p}"),
            ..finished_run(p, base)
        };
        store.create_run(&run).await?;
        runs.push(run.id);
    }
    let statements = store.append_statements();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for &run in &runs {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..per_producer {
                last = store.append_event(&bench_event(run, i)).await?.seq;
            }
            anyhow::Ok(last)
        }));
    }
    for task in tasks {
        let last = task.await??;
        ensure!(
            last == per_producer as u64,
            "a producer's last event got seq {last}, expected {per_producer}"
        );
    }
    let rate = (per_producer * PRODUCERS) as f64 / started.elapsed().as_secs_f64();
    let statements = store.append_statements() - statements;
    crate::say(&format!(
        "  {PRODUCERS} producers: {:.1} events per append statement",
        (per_producer * PRODUCERS) as f64 / statements.max(1) as f64
    ));
    Ok(rate)
}

/// How many events one batch carries in the batched figure.
const BATCH: usize = 100;

/// Events per second appended by one caller in `write_batch`es of [`BATCH`] events.
async fn batched_append_rate(store: &SqliteStore, run: RunId, n: usize) -> anyhow::Result<f64> {
    let batches = n.div_ceil(BATCH);
    let started = Instant::now();
    for b in 0..batches {
        let writes: Vec<StoreWrite> = (b * BATCH..(b + 1) * BATCH)
            .map(|i| StoreWrite::AppendEvent(bench_event(run, i)))
            .collect();
        let outcome = store.write_batch(&writes).await?;
        ensure!(outcome.events.len() == BATCH, "a batch lost events");
    }
    Ok((batches * BATCH) as f64 / started.elapsed().as_secs_f64())
}

/// The ten writes the driver makes between two agent calls (finish the step, its events and
/// artifacts, the run's counters, the next step and its start event), for step `seq` of
/// `run`: it finishes the stored step `done` and inserts step `seq + 1` with id `next`.
fn step_bookkeeping(run: &Run, seq: u32, done: StepId, next: StepId) -> Vec<StoreWrite> {
    let done = Step {
        id: done,
        ..step(run, seq)
    };
    let next = Step {
        id: next,
        status: StepStatus::Queued,
        ..step(run, seq + 1)
    };
    let event = |kind, payload| StoreWrite::AppendEvent(NewEvent::new(run.id, kind, payload));
    let artifact = |kind, path: String| {
        StoreWrite::RecordArtifact(NewArtifact {
            run_id: run.id,
            kind,
            location: ArtifactLocation::Workspace,
            path: path.into(),
            checksum: "0".repeat(64),
        })
    };
    vec![
        StoreWrite::UpdateStep(done),
        event(
            EventKind::IterationEnd,
            serde_json::json!({ "iteration": seq, "status": "ok", "exit_code": 0 }),
        ),
        event(
            EventKind::Heartbeat,
            serde_json::json!({ "tasks_done": seq }),
        ),
        artifact(
            ArtifactKind::IterationLog,
            format!("logs/loop/iter-{seq:04}.log"),
        ),
        artifact(ArtifactKind::Report, "logs/loop/report.tsv".into()),
        event(EventKind::Heartbeat, serde_json::json!({ "report": seq })),
        StoreWrite::UpdateRun(Run {
            iterations_run: seq,
            ..run.clone()
        }),
        StoreWrite::InsertStep(next),
        event(
            EventKind::IterationStart,
            serde_json::json!({ "iteration": seq + 1 }),
        ),
        event(
            EventKind::Heartbeat,
            serde_json::json!({ "started": seq + 1 }),
        ),
    ]
}

/// Median microseconds of one step's bookkeeping (ten writes) written one call at a time and
/// as one `write_batch`, over `reps` steps each.
async fn bookkeeping_cost(store: &SqliteStore, reps: u32) -> anyhow::Result<(f64, f64)> {
    let run = Run {
        name: "bookkeeping".into(),
        ..finished_run(0, now_ms())
    };
    store.create_run(&run).await?;
    let first = step(&run, 1);
    store.insert_step(&first).await?;
    let mut current = first.id;
    let mut single = Vec::new();
    let mut batched = Vec::new();
    for seq in 1..=2 * reps {
        let next = StepId::new();
        let writes = step_bookkeeping(&run, seq, current, next);
        current = next;
        let started = Instant::now();
        if seq % 2 == 0 {
            store.write_batch(&writes).await?;
            batched.push(started.elapsed().as_secs_f64() * 1e6);
        } else {
            for write in &writes {
                match write {
                    StoreWrite::UpdateRun(r) => store.update_run(r).await?,
                    StoreWrite::InsertStep(s) => store.insert_step(s).await?,
                    StoreWrite::UpdateStep(s) => store.update_step(s).await?,
                    StoreWrite::AppendEvent(e) => drop(store.append_event(e).await?),
                    StoreWrite::RecordArtifact(a) => drop(store.record_artifact(a).await?),
                    StoreWrite::Fence { .. } => {
                        drop(store.write_batch(std::slice::from_ref(write)).await?);
                    }
                }
            }
            single.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok((median(&single), median(&batched)))
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
    /// Events per second: one caller one by one, 16 concurrent producers, batches.
    append: f64,
    concurrent: f64,
    batched: f64,
    /// Microseconds of ten bookkeeping writes: one call each, one batch.
    ten_single: f64,
    ten_batched: f64,
}

/// How many events each append figure writes.
#[derive(Clone, Copy)]
struct Appends {
    sequential: usize,
    concurrent: usize,
    batched: usize,
    bookkeeping_reps: u32,
}

async fn measure(
    ctx: &Ctx,
    data: &Path,
    target: RunId,
    other: RunId,
    replay: usize,
    appends: Appends,
) -> anyhow::Result<Stage> {
    let (append, concurrent, batched, (ten_single, ten_batched)) = {
        let store = SqliteStore::open(&data.join("loopd.db")).await?;
        // Appends go to other runs, so the replayed run keeps exactly `replay` events.
        let sequential = append_rate(&store, other, appends.sequential).await?;
        let concurrent = concurrent_append_rate(&store, appends.concurrent).await?;
        let batched = batched_append_rate(&store, other, appends.batched).await?;
        let bookkeeping = bookkeeping_cost(&store, appends.bookkeeping_reps).await?;
        store.close().await;
        (sequential, concurrent, batched, bookkeeping)
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
        concurrent,
        batched,
        ten_single,
        ten_batched,
    })
}

pub(crate) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let (stages, replay, appends): (&[(usize, usize)], usize, Appends) = if ctx.quick {
        let appends = Appends {
            sequential: 1000,
            concurrent: 8_000,
            batched: 2_000,
            bookkeeping_reps: 50,
        };
        (&[(100, 10_000), (1000, 100_000)], 1000, appends)
    } else {
        let appends = Appends {
            sequential: 20_000,
            concurrent: 160_000,
            batched: 50_000,
            bookkeeping_reps: 300,
        };
        (&[(1000, 100_000), (10_000, 1_000_000)], 10_000, appends)
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
        report.info(
            bench,
            &format!("event append, one caller, one commit each, {at}"),
            format!("{:.0} ev/s", s.append),
        );
        report.at_least(
            bench,
            &format!("event append, {PRODUCERS} concurrent producers, {at}"),
            s.concurrent,
            20_000.0,
            "ev/s",
        );
        report.info(
            bench,
            &format!("event append, write_batch of {BATCH}, {at}"),
            format!("{:.0} ev/s", s.batched),
        );
        report.info(
            bench,
            &format!("one step's 10 bookkeeping writes, one call each, {at}"),
            format!("{:.0} µs", s.ten_single),
        );
        report.info(
            bench,
            &format!("one step's 10 bookkeeping writes, one write_batch, {at}"),
            format!("{:.0} µs", s.ten_batched),
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
