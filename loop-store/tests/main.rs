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
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
        assert_eq!(applied_migrations(&store).await, vec![1]);
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
            vec![1],
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
