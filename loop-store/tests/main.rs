//! Integration tests of `SqliteStore` against real database files: the store contract suite,
//! migrations and durability across reopen, the pragmas every connection must carry, several
//! stores (as several processes would) on one file, busy databases and corrupt rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loop_engine::Store;
use loop_engine::backend::StoreError;
use loop_engine::testing::store_contract;
use loop_store::{OpenOptions, SqliteStore};
use tempfile::TempDir;

/// A fresh database file in its own temporary directory (kept alive by the `TempDir`).
async fn fresh() -> (TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("loop.db");
    let store = SqliteStore::open(&path).await.expect("open a fresh store");
    (dir, path, store)
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).await.expect("open the store")
}

/// Every error of `err`'s source chain, joined, for asserting on what it names.
fn chain(err: &StoreError) -> String {
    loop_engine::error::chain(err)
}

mod contract {
    use super::*;

    #[tokio::test]
    async fn sqlite_file_store_satisfies_the_store_contract() {
        let (_dir, _path, store) = fresh().await;
        store_contract::run_all(&store).await;
    }

    #[tokio::test]
    async fn sqlite_memory_store_satisfies_the_store_contract() {
        let store = SqliteStore::open_in_memory()
            .await
            .expect("open an in-memory store");
        store_contract::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_gap_free() {
        let (_dir, _path, store) = fresh().await;
        store_contract::concurrent_appends(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_batches_are_gap_free() {
        let (_dir, _path, store) = fresh().await;
        store_contract::concurrent_batches(Arc::new(store)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_never_share_a_run() {
        let (_dir, _path, store) = fresh().await;
        store_contract::concurrent_claims(Arc::new(store)).await;
    }
}

mod files {
    use super::*;

    async fn applied_migrations(store: &SqliteStore) -> Vec<i64> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.read_pool())
            .await
            .expect("read the migration table")
    }

    #[tokio::test]
    async fn migrations_create_every_table_on_a_fresh_file() {
        let (_dir, path, store) = fresh().await;
        assert!(path.exists(), "open must create the database file");
        assert_eq!(applied_migrations(&store).await, vec![1, 2, 3, 4]);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('runs', 'steps', 'events', 'artifacts') ORDER BY name",
        )
        .fetch_all(store.read_pool())
        .await
        .expect("list the tables");
        assert_eq!(tables, ["artifacts", "events", "runs", "steps"]);
    }

    #[tokio::test]
    async fn reopening_migrates_nothing_and_keeps_every_row() {
        let (_dir, path, store) = fresh().await;
        let run = store_contract::full_run("/ws/reopen");
        store.create_run(&run).await.expect("create the run");
        let step = store_contract::full_step(run.id, 1);
        store.insert_step(&step).await.expect("insert the step");
        for n in 1..=3 {
            store
                .append_event(&store_contract::sample_event(run.id, n))
                .await
                .expect("append");
        }
        let artifact = store
            .record_artifact(&store_contract::sample_artifact(run.id, "/logs/a.log"))
            .await
            .expect("record the artifact");
        let migrated_at: String =
            sqlx::query_scalar("SELECT installed_on FROM _sqlx_migrations WHERE version = 1")
                .fetch_one(store.read_pool())
                .await
                .expect("read the migration time");
        store.close().await;

        let store = open(&path).await;
        assert_eq!(
            applied_migrations(&store).await,
            vec![1, 2, 3, 4],
            "reopening must not apply a migration again"
        );
        let still: String =
            sqlx::query_scalar("SELECT installed_on FROM _sqlx_migrations WHERE version = 1")
                .fetch_one(store.read_pool())
                .await
                .expect("read the migration time");
        assert_eq!(still, migrated_at, "the migration must not be re-installed");
        assert_eq!(store.get_run(run.id).await.expect("get the run"), run);
        assert_eq!(
            store.list_steps(run.id).await.expect("list steps"),
            vec![step]
        );
        assert_eq!(
            store.list_artifacts(run.id).await.expect("list artifacts"),
            vec![artifact]
        );
        assert_eq!(store.last_event_seq(run.id).await.expect("last seq"), 3);
        let next = store
            .append_event(&store_contract::sample_event(run.id, 4))
            .await
            .expect("append after reopen");
        assert_eq!(next.seq, 4, "numbering must continue after a reopen");
        store.close().await;

        // A third open on the same file still sees everything.
        let store = open(&path).await;
        assert_eq!(store.last_event_seq(run.id).await.expect("last seq"), 4);
    }

    #[tokio::test]
    async fn every_connection_has_wal_foreign_keys_and_a_busy_timeout() {
        let (_dir, _path, store) = fresh().await;
        for round in 0..3 {
            // Hold several connections at once so the pool has to open distinct ones.
            let mut conns = Vec::new();
            for _ in 0..4 {
                conns.push(
                    store
                        .read_pool()
                        .acquire()
                        .await
                        .expect("acquire a connection"),
                );
            }
            conns.push(
                store
                    .write_pool()
                    .acquire()
                    .await
                    .expect("acquire the writer"),
            );
            for conn in &mut conns {
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("read journal_mode");
                assert_eq!(mode, "wal", "round {round}: journal_mode");
                let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("read foreign_keys");
                assert_eq!(fk, 1, "round {round}: foreign_keys");
                let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("read busy_timeout");
                assert!(timeout >= 5_000, "round {round}: busy_timeout {timeout}");
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut **conn)
                    .await
                    .expect("read synchronous");
                assert_eq!(sync, 1, "round {round}: synchronous must be NORMAL");
            }
        }
    }

    /// Pinging an SQLite connection before each use only costs a round trip to its thread.
    #[tokio::test]
    async fn pools_do_not_ping_connections_before_use() {
        let (_dir, _path, store) = fresh().await;
        for pool in [store.read_pool(), store.write_pool()] {
            assert!(!pool.options().get_test_before_acquire());
        }
    }

    #[tokio::test]
    async fn opening_in_a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let result = SqliteStore::open(&dir.path().join("missing/loop.db")).await;
        assert!(
            matches!(result, Err(StoreError::Fatal(_))),
            "expected Fatal, got {:?}",
            result.map(|_| ())
        );
    }

    #[tokio::test]
    async fn a_closed_store_fails_instead_of_hanging() {
        let (_dir, _path, store) = fresh().await;
        let clone = store.clone();
        store.close().await;
        let result = clone.get_run(loop_engine::domain::RunId::new()).await;
        assert!(
            matches!(result, Err(StoreError::Fatal(_))),
            "expected Fatal, got {result:?}"
        );
    }
}

mod processes {
    use std::collections::BTreeSet;

    use loop_engine::backend::ClaimRequest;

    use super::*;

    /// Two stores on one file stand in for two processes: each has its own connections, so
    /// only SQLite's file lock keeps them apart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_appending_to_one_run_stay_gap_free() {
        let (_dir, path, first) = fresh().await;
        let second = open(&path).await;
        let run = store_contract::sample_run("/ws/two-stores");
        first.create_run(&run).await.expect("create the run");

        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let store = if task % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let event = store_contract::sample_event(run.id, task * 1_000 + i);
                    seqs.push(store.append_event(&event).await.expect("append").seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            let seqs = task.await.expect("the appending task");
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "one task's appends must be numbered in call order"
            );
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=400).collect::<Vec<u64>>());
        for store in [&first, &second] {
            let stored = store.events_after(run.id, 0, 1_000).await.expect("read");
            assert_eq!(
                stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=400).collect::<Vec<u64>>()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_claiming_never_share_a_run() {
        let (_dir, path, first) = fresh().await;
        let second = open(&path).await;
        let mut created = BTreeSet::new();
        for _ in 0..30 {
            let run = store_contract::sample_run("/ws/two-claimers");
            first.create_run(&run).await.expect("create");
            created.insert(run.id);
        }
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let store = if worker % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                let req = ClaimRequest {
                    worker_id: format!("worker-{worker}"),
                    now: 1_000,
                    lease_ms: 60_000,
                    order: Default::default(),
                    skip_workspaces: Vec::new(),
                    skip_runs: Vec::new(),
                };
                let mut claimed = Vec::new();
                while let Some(run) = store.claim_next_run(&req).await.expect("claim") {
                    claimed.push(run.id);
                }
                claimed
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("the claiming task"));
        }
        let unique: BTreeSet<_> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "a run was claimed twice");
        assert_eq!(unique, created, "every run must be claimed once");
    }
}

mod group_commit {
    //! Concurrent `append_event` calls share statements; each still gets its own answer.

    use loop_engine::domain::{Event, RunId, StepId};
    use serde_json::json;

    use super::*;

    /// Starts one task per `(run, task)` that appends `per_task` events to `run` one by one
    /// and returns the results in call order.
    fn appenders(
        store: &SqliteStore,
        runs: &[RunId],
        tasks_per_run: u64,
        per_task: u64,
    ) -> Vec<(RunId, u64, tokio::task::JoinHandle<Vec<Event>>)> {
        let mut handles = Vec::new();
        for &run in runs {
            for task in 0..tasks_per_run {
                let store = store.clone();
                let handle = tokio::spawn(async move {
                    let mut appended = Vec::new();
                    for i in 0..per_task {
                        let event = loop_engine::domain::NewEvent {
                            payload: json!({ "task": task, "i": i }),
                            ..store_contract::sample_event(run, i)
                        };
                        appended.push(store.append_event(&event).await.expect("append"));
                    }
                    appended
                });
                handles.push((run, task, handle));
            }
        }
        handles
    }

    async fn new_runs(store: &SqliteStore, n: usize) -> Vec<RunId> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let run = store_contract::sample_run("/ws/group");
            store.create_run(&run).await.expect("create a run");
            ids.push(run.id);
        }
        ids
    }

    /// Checks that every run holds exactly the events its appenders got back, numbered
    /// 1..=n without gaps, each task's in call order.
    async fn assert_runs_gap_free(
        store: &SqliteStore,
        results: Vec<(RunId, u64, Vec<Event>)>,
        per_run: u64,
    ) {
        let mut by_run: std::collections::HashMap<RunId, Vec<Event>> = Default::default();
        for (run, task, appended) in results {
            assert!(
                appended.windows(2).all(|w| w[0].seq < w[1].seq),
                "task {task} of run {run}: appends must be numbered in call order"
            );
            for (i, event) in appended.iter().enumerate() {
                assert_eq!(event.run_id, run);
                assert_eq!(event.payload, json!({ "task": task, "i": i }));
            }
            by_run.entry(run).or_default().extend(appended);
        }
        for (run, mut appended) in by_run {
            appended.sort_by_key(|e| e.seq);
            let stored = store.events_after(run, 0, 100_000).await.expect("read");
            assert_eq!(
                stored, appended,
                "run {run}: the stored events must be exactly the returned ones"
            );
            assert_eq!(
                stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=per_run).collect::<Vec<_>>(),
                "run {run}: seqs must be gap-free"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_appenders_across_runs_are_all_ok_and_gap_free() {
        let (_dir, _path, store) = fresh().await;
        let runs = new_runs(&store, 6).await;
        let handles = appenders(&store, &runs, 4, 60);
        let mut results = Vec::new();
        for (run, task, handle) in handles {
            results.push((run, task, handle.await.expect("the appending task")));
        }
        assert_runs_gap_free(&store, results, 4 * 60).await;
    }

    /// On one thread every appender queues its event before the drain task first runs, so
    /// each round of 32 appends must be one statement, not 32.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_appends_share_statements() {
        let (_dir, _path, store) = fresh().await;
        let runs = new_runs(&store, 4).await;
        let before = store.append_statements();
        let handles = appenders(&store, &runs, 8, 20);
        let mut results = Vec::new();
        for (run, task, handle) in handles {
            results.push((run, task, handle.await.expect("the appending task")));
        }
        let statements = store.append_statements() - before;
        assert!(
            statements <= 40,
            "640 appends by 32 concurrent callers took {statements} statements"
        );
        assert_runs_gap_free(&store, results, 8 * 20).await;
    }

    /// Events naming an unknown step or run, queued in the same group as good ones, fail
    /// alone with their own NotFound; the good ones are appended gap-free.
    #[tokio::test(flavor = "current_thread")]
    async fn a_bad_event_among_good_concurrent_ones_fails_alone() {
        let (_dir, _path, store) = fresh().await;
        let runs = new_runs(&store, 2).await;
        let unknown_step = StepId::new();
        let unknown_run = RunId::new();
        for round in 0..3u64 {
            let mut good = Vec::new();
            for i in 0..10u64 {
                let store = store.clone();
                let run = runs[usize::try_from(i % 2).expect("small")];
                good.push(tokio::spawn(async move {
                    store
                        .append_event(&store_contract::sample_event(run, round * 100 + i))
                        .await
                }));
            }
            let bad_step = {
                let store = store.clone();
                let event = store_contract::sample_event(runs[0], 99).with_step(unknown_step);
                tokio::spawn(async move { store.append_event(&event).await })
            };
            let bad_run = {
                let store = store.clone();
                let event = store_contract::sample_event(unknown_run, 98);
                tokio::spawn(async move { store.append_event(&event).await })
            };
            for handle in good {
                handle
                    .await
                    .expect("the appending task")
                    .expect("a good event must be appended whatever its group holds");
            }
            match bad_step.await.expect("the appending task") {
                Err(StoreError::NotFound { what }) => {
                    assert!(what.contains(&unknown_step.to_string()))
                }
                other => panic!("an event naming an unknown step must be NotFound, got {other:?}"),
            }
            match bad_run.await.expect("the appending task") {
                Err(StoreError::NotFound { what }) => {
                    assert!(what.contains(&unknown_run.to_string()))
                }
                other => panic!("an event of an unknown run must be NotFound, got {other:?}"),
            }
        }
        for run in runs {
            let stored = store.events_after(run, 0, 100).await.expect("read");
            assert_eq!(
                stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (1..=15).collect::<Vec<u64>>(),
                "the rejected events must use up no seq"
            );
        }
    }

    /// Callers that drop their append while it is queued lose nothing of the others: every
    /// remaining call is answered Ok, and the stored events are gap-free and unique.
    #[tokio::test(flavor = "current_thread")]
    async fn dropped_callers_do_not_disturb_the_others() {
        let (_dir, _path, store) = fresh().await;
        let runs = new_runs(&store, 1).await;
        let run = runs[0];
        let mut handles = Vec::new();
        for i in 0..40u64 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .append_event(&store_contract::sample_event(run, i))
                    .await
            }));
        }
        // Let every task queue its event, then drop half of the callers.
        tokio::task::yield_now().await;
        let mut kept = Vec::new();
        for (i, handle) in handles.into_iter().enumerate() {
            if i % 2 == 0 {
                handle.abort();
            } else {
                kept.push(handle);
            }
        }
        let mut returned = Vec::new();
        for handle in kept {
            returned.push(
                handle
                    .await
                    .expect("a kept task")
                    .expect("a kept caller's append"),
            );
        }
        // An append queued now is written after every event queued before it, dropped or
        // not, so afterwards the log is complete; it continues the numbering.
        let last = store
            .append_event(&store_contract::sample_event(run, 1_000))
            .await
            .expect("append afterwards");
        let stored = store.events_after(run, 0, 100).await.expect("read");
        let n = u64::try_from(stored.len()).expect("small");
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<u64>>(),
            "the stored seqs must be gap-free"
        );
        assert_eq!(stored.last(), Some(&last));
        let mut payloads: Vec<String> = stored.iter().map(|e| e.payload.to_string()).collect();
        payloads.sort();
        payloads.dedup();
        assert_eq!(payloads.len(), stored.len(), "no event may be stored twice");
        for event in &returned {
            assert!(
                stored.contains(event),
                "a kept caller's event {event:?} must be stored as returned"
            );
        }
    }
}

mod batches {
    //! `write_batch` specifics of SQLite: dropped batches and big groups of events.

    use loop_engine::backend::StoreWrite;

    use super::*;

    /// A batch whose future is dropped at any point is applied entirely or not at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_batch_is_all_or_nothing() {
        let (_dir, _path, store) = fresh().await;
        let run = store_contract::sample_run("/ws/dropped-batch");
        store.create_run(&run).await.expect("create the run");
        let mut expected_events = 0;
        for round in 0..30u32 {
            let step = store_contract::sample_step(run.id, round + 1);
            let mut batch = vec![StoreWrite::InsertStep(step.clone())];
            for i in 0..20 {
                batch.push(StoreWrite::AppendEvent(
                    store_contract::sample_event(run.id, i).with_step(step.id),
                ));
                // Not consecutive appends: many statements, many points to be dropped at.
                batch.push(StoreWrite::UpdateStep(step.clone()));
            }
            let task = {
                let store = store.clone();
                tokio::spawn(async move { store.write_batch(&batch).await })
            };
            // Vary the moment of the drop from "before it started" to "after it finished".
            tokio::time::sleep(std::time::Duration::from_micros(u64::from(round) * 150)).await;
            task.abort();
            let _ = task.await;
            // A write queues behind whatever the dropped batch left on the writer connection
            // (its commit or its rollback), so the reads below see the outcome.
            store.update_run(&run).await.expect("update the run");
            let inserted = store.get_step(step.id).await.is_ok();
            let events = store.last_event_seq(run.id).await.expect("last seq");
            if inserted {
                expected_events += 20;
            }
            assert_eq!(
                events, expected_events,
                "round {round}: the batch must be applied entirely or not at all"
            );
        }
    }

    /// More consecutive appends than one statement takes are split and still numbered in
    /// batch order.
    #[tokio::test]
    async fn a_batch_of_many_events_is_numbered_in_order() {
        let (_dir, _path, store) = fresh().await;
        let run = store_contract::sample_run("/ws/big-batch");
        store.create_run(&run).await.expect("create the run");
        let batch: Vec<StoreWrite> = (0..1_500)
            .map(|i| StoreWrite::AppendEvent(store_contract::sample_event(run.id, i)))
            .collect();
        let outcome = store.write_batch(&batch).await.expect("write the batch");
        assert_eq!(
            outcome.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=1_500).collect::<Vec<u64>>()
        );
        for event in &outcome.events {
            assert_eq!(event.payload, serde_json::json!({ "n": event.seq - 1 }));
        }
        let stored = store.events_after(run.id, 0, 2_000).await.expect("read");
        assert_eq!(stored, outcome.events);
    }
}

mod locking {
    use std::time::Duration;

    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

    use super::*;

    /// Another "process" that takes the write lock and holds it.
    async fn lock_holder(path: &Path) -> SqliteConnection {
        let options = SqliteConnectOptions::new().filename(path);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .expect("connect the lock holder");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("take the write lock");
        conn
    }

    async fn impatient_store(path: &Path, busy_timeout_ms: u64) -> SqliteStore {
        let options = OpenOptions::default().busy_timeout(Duration::from_millis(busy_timeout_ms));
        SqliteStore::open_with(path, &options)
            .await
            .expect("open the store")
    }

    #[tokio::test]
    async fn a_lock_that_outlasts_the_retries_is_retryable_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("loop.db");
        let store = impatient_store(&path, 50).await;
        let run = store_contract::sample_run("/ws/locked");
        store.create_run(&run).await.expect("create the run");

        let mut holder = lock_holder(&path).await;
        let appended = store
            .append_event(&store_contract::sample_event(run.id, 1))
            .await;
        assert!(
            matches!(appended, Err(StoreError::Retryable(_))),
            "a write blocked past every retry must be Retryable, got {appended:?}"
        );
        let claimed = store
            .claim_next_run(&loop_engine::backend::ClaimRequest {
                worker_id: "w".into(),
                now: 0,
                lease_ms: 1,
                order: Default::default(),
                skip_workspaces: Vec::new(),
                skip_runs: Vec::new(),
            })
            .await;
        assert!(
            matches!(claimed, Err(StoreError::Retryable(_))),
            "a claim blocked past every retry must be Retryable, got {claimed:?}"
        );
        // WAL: readers are not blocked by the writer.
        assert_eq!(store.get_run(run.id).await.expect("read while locked"), run);

        sqlx::query("ROLLBACK")
            .execute(&mut holder)
            .await
            .expect("release the lock");
        assert_eq!(
            store.last_event_seq(run.id).await.expect("last seq"),
            0,
            "a Retryable append must not have been applied"
        );
        let next = store
            .append_event(&store_contract::sample_event(run.id, 2))
            .await
            .expect("append after the lock is gone");
        assert_eq!(next.seq, 1);
    }

    /// A group of queued appends and a batch that meet a lock outlasting every retry are all
    /// Retryable, and none of them was applied.
    #[tokio::test]
    async fn grouped_appends_and_batches_blocked_past_the_retries_are_retryable() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("loop.db");
        let store = impatient_store(&path, 30).await;
        let run = store_contract::sample_run("/ws/locked-group");
        store.create_run(&run).await.expect("create the run");

        let mut holder = lock_holder(&path).await;
        let mut appends = Vec::new();
        for i in 0..5 {
            let store = store.clone();
            appends.push(tokio::spawn(async move {
                store
                    .append_event(&store_contract::sample_event(run.id, i))
                    .await
            }));
        }
        let batch = store
            .write_batch(&[
                loop_engine::backend::StoreWrite::AppendEvent(store_contract::sample_event(
                    run.id, 9,
                )),
                loop_engine::backend::StoreWrite::UpdateRun(run.clone()),
            ])
            .await;
        assert!(
            matches!(batch, Err(StoreError::Retryable(_))),
            "a batch blocked past every retry must be Retryable, got {batch:?}"
        );
        for append in appends {
            let appended = append.await.expect("the appending task");
            assert!(
                matches!(appended, Err(StoreError::Retryable(_))),
                "every append of a blocked group must be Retryable, got {appended:?}"
            );
        }
        sqlx::query("ROLLBACK")
            .execute(&mut holder)
            .await
            .expect("release the lock");
        assert_eq!(store.last_event_seq(run.id).await.expect("last seq"), 0);
    }

    #[tokio::test]
    async fn a_short_lock_is_ridden_out_by_the_internal_retries() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("loop.db");
        // Four attempts of 100 ms plus the backoffs give the lock about half a second.
        let store = impatient_store(&path, 100).await;
        let run = store_contract::sample_run("/ws/short-lock");
        store.create_run(&run).await.expect("create the run");

        let mut holder = lock_holder(&path).await;
        let release = tokio::spawn(async move {
            // Longer than one busy_timeout, much shorter than all retries together.
            tokio::time::sleep(Duration::from_millis(150)).await;
            sqlx::query("ROLLBACK")
                .execute(&mut holder)
                .await
                .expect("release the lock");
        });
        let appended = store
            .append_event(&store_contract::sample_event(run.id, 1))
            .await
            .expect("the retries must outlast a short lock");
        assert_eq!(appended.seq, 1);
        release.await.expect("the releasing task");
    }
}

mod corruption {
    use super::*;

    #[tokio::test]
    async fn a_corrupt_run_row_is_fatal_and_names_its_column() {
        let (_dir, _path, store) = fresh().await;
        let run = store_contract::sample_run("/ws/corrupt");
        store.create_run(&run).await.expect("create the run");
        sqlx::query("UPDATE runs SET name_source = 'oracle' WHERE id = ?")
            .bind(run.id.to_string())
            .execute(store.write_pool())
            .await
            .expect("corrupt the row");

        let err = store.get_run(run.id).await.expect_err("a corrupt row");
        assert!(matches!(err, StoreError::Fatal(_)), "got {err:?}");
        assert!(chain(&err).contains("runs.name_source"), "{}", chain(&err));
        let listed = store.list_runs(&Default::default()).await;
        assert!(
            matches!(listed, Err(StoreError::Fatal(_))),
            "got {listed:?}"
        );
    }

    #[tokio::test]
    async fn a_corrupt_step_usage_is_fatal_and_names_its_column() {
        let (_dir, _path, store) = fresh().await;
        let run = store_contract::sample_run("/ws/corrupt-step");
        store.create_run(&run).await.expect("create the run");
        let step = store_contract::full_step(run.id, 1);
        store.insert_step(&step).await.expect("insert the step");
        sqlx::query("UPDATE steps SET usage = '{\"num_turns\": \"many\"}' WHERE id = ?")
            .bind(step.id.to_string())
            .execute(store.write_pool())
            .await
            .expect("corrupt the row");

        let err = store.get_step(step.id).await.expect_err("a corrupt row");
        assert!(matches!(err, StoreError::Fatal(_)), "got {err:?}");
        assert!(chain(&err).contains("steps.usage"), "{}", chain(&err));
    }

    #[tokio::test]
    async fn the_schema_rejects_unknown_status_spellings() {
        let (_dir, _path, store) = fresh().await;
        let run = store_contract::sample_run("/ws/check");
        store.create_run(&run).await.expect("create the run");
        let result = sqlx::query("UPDATE runs SET status = 'running' WHERE id = ?")
            .bind(run.id.to_string())
            .execute(store.write_pool())
            .await;
        assert!(result.is_err(), "a lowercase status must violate the CHECK");
    }
}
