//! `SqliteStore`: the [`Store`] implementation over one SQLite file, delegating each method to
//! its table's module (appends through the group-commit queue, batches to one transaction) and
//! retrying the ones that met a busy database.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use loop_engine::Store;
use loop_engine::backend::{BatchOutcome, ClaimRequest, RunFilter, StoreError, StoreWrite};
use loop_engine::domain::{
    Artifact, Event, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId, UnixMs,
};
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;

use crate::append_queue::AppendQueue;
use crate::error::map_sqlx;
use crate::pool::{self, OpenOptions, Pools};
use crate::{artifacts, batch, events, runs, steps};

/// A [`Store`] in an SQLite database (WAL mode), migrated on open.
///
/// Cloning is cheap and shares the connections. Several `SqliteStore`s, in one process or in
/// several, may open the same file: SQLite's lock and `busy_timeout` serialise their writes,
/// and claiming and event numbering stay correct across them.
///
/// Concurrent [`Store::append_event`] calls on one store (and its clones) are committed in
/// groups: while one group is written, the next one queues, and it is then written as one
/// statement (see the `append_queue` module). [`Store::write_batch`] is one transaction.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pools: Pools,
    appends: Arc<AppendQueue>,
}

/// How many times a call that met a busy or locked database is tried in all. SQLite already
/// waited `busy_timeout` inside each attempt; the retries cover a lock held across that wait
/// (a long checkpoint, another process's long transaction) before `Retryable` reaches the
/// engine.
const ATTEMPTS: u32 = 4;

/// The pause before the first retry; it doubles after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// Runs `op` until it returns anything but [`StoreError::Retryable`], at most [`ATTEMPTS`]
/// times. Retrying is safe because a `Retryable` write was not applied (busy and locked
/// errors abort the statement or transaction, and a pool timeout never reached SQLite).
pub(crate) async fn retry<T, F, Fut>(what: &'static str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(StoreError::Retryable(e)) if attempt < ATTEMPTS => {
                tracing::debug!(operation = what, attempt, error = %e, "database busy, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            Err(StoreError::Retryable(e)) => {
                tracing::warn!(operation = what, attempts = attempt, error = %e, "database stayed busy");
                return Err(StoreError::Retryable(e));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    /// Opens the database file at `path` with the default [`OpenOptions`], creating the file
    /// if it is missing (its parent directory must exist) and applying pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &OpenOptions::default()).await
    }

    /// [`open`](Self::open) with explicit options.
    pub async fn open_with(path: &Path, options: &OpenOptions) -> Result<Self, StoreError> {
        let pools = pool::open_file(path, options).await?;
        tracing::debug!(path = %path.display(), "opened sqlite store");
        Ok(Self::with_pools(pools))
    }

    /// A fresh, migrated database that lives in memory until the store (and every clone) is
    /// dropped. For tests and throwaway embeddings.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self::with_pools(
            pool::open_memory(&OpenOptions::default()).await?,
        ))
    }

    fn with_pools(pools: Pools) -> Self {
        Self {
            pools,
            appends: Arc::default(),
        }
    }

    /// How many statements `append_event` has written so far through this store and its
    /// clones (a group of concurrent appends is one), for diagnostics and tests.
    pub fn append_statements(&self) -> u64 {
        self.appends.statements()
    }

    /// Closes every connection, waiting for calls in flight (of this store and its clones)
    /// to finish. Later calls fail with [`StoreError::Fatal`].
    pub async fn close(self) {
        self.pools.close().await;
    }

    /// The pool that serves reads, for diagnostics (e.g. checking pragmas). Writing through
    /// it bypasses the store's write queue; don't.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.pools.reader
    }

    /// The single-connection pool that serves writes, for diagnostics.
    pub fn write_pool(&self) -> &SqlitePool {
        &self.pools.writer
    }

    /// The writer connection, waited for in the pool's fair queue.
    async fn writer(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.pools.writer.acquire().await.map_err(map_sqlx)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: &Run) -> Result<(), StoreError> {
        retry("create_run", || runs::create(&self.pools.writer, run)).await
    }

    async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        retry("get_run", || runs::get(&self.pools.reader, id)).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        retry("list_runs", || runs::list(&self.pools.reader, filter)).await
    }

    async fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        retry("update_run", || async {
            runs::update(&mut *self.writer().await?, run).await
        })
        .await
    }

    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError> {
        retry("claim_next_run", || {
            runs::claim_next(&self.pools.writer, req)
        })
        .await
    }

    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        retry("renew_lease", || {
            runs::renew_lease(&self.pools.writer, run_id, worker_id, until)
        })
        .await
    }

    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError> {
        retry("release_run", || {
            runs::release(&self.pools.writer, run_id, worker_id)
        })
        .await
    }

    async fn insert_step(&self, step: &Step) -> Result<(), StoreError> {
        retry("insert_step", || async {
            steps::insert(&mut *self.writer().await?, step).await
        })
        .await
    }

    async fn update_step(&self, step: &Step) -> Result<(), StoreError> {
        retry("update_step", || async {
            steps::update(&mut *self.writer().await?, step).await
        })
        .await
    }

    async fn get_step(&self, id: StepId) -> Result<Step, StoreError> {
        retry("get_step", || steps::get(&self.pools.reader, id)).await
    }

    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError> {
        retry("list_steps", || steps::list(&self.pools.reader, run_id)).await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError> {
        // The queue retries a busy database itself.
        self.appends.append(&self.pools.writer, event).await
    }

    async fn events_after(
        &self,
        run_id: RunId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        retry("events_after", || {
            events::after(&self.pools.reader, run_id, after_seq, limit)
        })
        .await
    }

    async fn last_event_seq(&self, run_id: RunId) -> Result<u64, StoreError> {
        retry("last_event_seq", || {
            events::last_seq(&self.pools.reader, run_id)
        })
        .await
    }

    async fn record_artifact(&self, artifact: &NewArtifact) -> Result<Artifact, StoreError> {
        retry("record_artifact", || async {
            artifacts::record(&mut *self.writer().await?, artifact).await
        })
        .await
    }

    async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
        retry("list_artifacts", || {
            artifacts::list(&self.pools.reader, run_id)
        })
        .await
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        retry("count_runs_by_status", || {
            runs::count_by_status(&self.pools.reader)
        })
        .await
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
        retry("write_batch", || batch::write(&self.pools.writer, writes)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn busy() -> StoreError {
        StoreError::Retryable("database is locked".into())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_the_first_non_retryable_result() {
        let calls = AtomicU32::new(0);
        let result = retry("test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(busy())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_with_retryable_after_all_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = retry("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(busy())
        })
        .await;
        assert!(matches!(result, Err(StoreError::Retryable(_))));
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), StoreError> = retry("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict {
                detail: "duplicate".into(),
            })
        })
        .await;
        assert!(matches!(result, Err(StoreError::Conflict { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn in_memory_store_keeps_data_across_calls() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let run = loop_engine::testing::store_contract::sample_run("/ws/memory");
        store.create_run(&run).await.unwrap();
        assert_eq!(store.get_run(run.id).await.unwrap(), run);
    }
}
