//! `SqliteStore`: the [`Store`] implementation over one SQLite file, delegating each method to
//! its table's module (appends through the group-commit queue, batches to one transaction) and
//! retrying the ones that met a busy database.

use std::path::Path;
use std::sync::Arc;

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
use crate::health::WriteHealth;
use crate::pool::{self, OpenOptions, Pools};
use crate::retry::retry;
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
    /// The database file (None: in memory), for the health check's free-space test.
    path: Option<Arc<Path>>,
    health: Arc<WriteHealth>,
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
        let mut store = Self::with_pools(pools);
        store.path = Some(Arc::from(path));
        Ok(store)
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
            path: None,
            health: Arc::default(),
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

    /// `result` of a write, remembered for the health check.
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.health.note(&result);
        result
    }

    /// The writer connection, waited for in the pool's fair queue.
    async fn writer(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.pools.writer.acquire().await.map_err(map_sqlx)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_run(&self, run: &Run) -> Result<(), StoreError> {
        let result = retry("create_run", || runs::create(&self.pools.writer, run)).await;
        self.noted(result)
    }

    async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        retry("get_run", || runs::get(&self.pools.reader, id)).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        retry("list_runs", || runs::list(&self.pools.reader, filter)).await
    }

    async fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        let result = retry("update_run", || async {
            runs::update(&mut *self.writer().await?, run).await
        })
        .await;
        self.noted(result)
    }

    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError> {
        let result = retry("claim_next_run", || {
            runs::claim_next(&self.pools.writer, req)
        })
        .await;
        self.noted(result)
    }

    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        let result = retry("renew_lease", || {
            runs::renew_lease(&self.pools.writer, run_id, worker_id, until)
        })
        .await;
        self.noted(result)
    }

    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError> {
        let result = retry("release_run", || {
            runs::release(&self.pools.writer, run_id, worker_id)
        })
        .await;
        self.noted(result)
    }

    async fn insert_step(&self, step: &Step) -> Result<(), StoreError> {
        let result = retry("insert_step", || async {
            steps::insert(&mut *self.writer().await?, step).await
        })
        .await;
        self.noted(result)
    }

    async fn update_step(&self, step: &Step) -> Result<(), StoreError> {
        let result = retry("update_step", || async {
            steps::update(&mut *self.writer().await?, step).await
        })
        .await;
        self.noted(result)
    }

    async fn get_step(&self, id: StepId) -> Result<Step, StoreError> {
        retry("get_step", || steps::get(&self.pools.reader, id)).await
    }

    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError> {
        retry("list_steps", || steps::list(&self.pools.reader, run_id)).await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError> {
        // The queue retries a busy database itself.
        let result = self.appends.append(&self.pools.writer, event).await;
        self.noted(result)
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
        let result = retry("record_artifact", || async {
            artifacts::record(&mut *self.writer().await?, artifact).await
        })
        .await;
        self.noted(result)
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

    async fn check_health(&self) -> Result<(), StoreError> {
        retry("check_health", || runs::count_by_status(&self.pools.reader)).await?;
        self.health
            .check(&self.pools.writer, self.path.as_deref())
            .await
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
        let result = retry("write_batch", || batch::write(&self.pools.writer, writes)).await;
        self.noted(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_keeps_data_across_calls() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let run = loop_engine::testing::store_contract::sample_run("/ws/memory");
        store.create_run(&run).await.unwrap();
        assert_eq!(store.get_run(run.id).await.unwrap(), run);
    }
}
