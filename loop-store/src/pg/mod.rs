//! `PgStore`: the [`Store`] on PostgreSQL, for several loopd hosts sharing one database (SPEC
//! §14). Same tables and contract as the SQLite store; what differs is how concurrency is
//! made safe across processes on many machines:
//!
//! - **Claims** take one claimable run with `SELECT ... FOR UPDATE SKIP LOCKED` and mark it
//!   in the same transaction, incrementing its `lease_epoch` (the fencing token).
//! - **Fencing**: a batch that starts with [`StoreWrite::Fence`] locks the run row and
//!   checks the epoch before its writes, in one transaction.
//! - **Event numbers** come from a per-run counter row incremented in the appending
//!   transaction: gap-free and in commit order whatever the number of writers.
//! - **Wake-ups**: triggers `NOTIFY` on run and event changes; one `LISTEN` connection per
//!   store turns them into [`StoreChange`]s ([`Store::changes`]).

mod columns;
mod error;
mod listen;
mod records;
mod runs;

use std::time::Duration;

use async_trait::async_trait;
use loop_engine::Store;
use loop_engine::backend::{
    BatchOutcome, ClaimRequest, RunFilter, StoreChange, StoreError, StoreWrite,
};
use loop_engine::domain::{
    Artifact, Event, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId, UnixMs,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::broadcast;

use crate::retry::retry;
use error::map_pg;

/// Tuning of [`PgStore::connect_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// Most connections the store keeps open.
    pub max_connections: u32,
    /// How long a call waits for a connection (a free pooled one, or a new one to a server
    /// that may be unreachable) before it is `Retryable`.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] in a PostgreSQL database, migrated on connect with `migrations/postgres/`.
///
/// Cloning is cheap and shares the connections and the change feed. Any number of
/// `PgStore`s, in any number of processes on any number of hosts, may use one database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    changes: broadcast::Sender<StoreChange>,
}

/// How many changes a slow receiver may fall behind before it is told to resync.
const CHANGE_CAPACITY: usize = 4096;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) with the default
    /// [`PgOptions`], applies pending migrations and starts listening for changes.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, &PgOptions::default()).await
    }

    /// [`connect`](Self::connect) with explicit options.
    pub async fn connect_with(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = url.parse().map_err(|e| {
            StoreError::Fatal(Box::new(PgStoreError::BadUrl {
                reason: format!("{e}"),
            }))
        })?;
        let connect = connect.log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(map_pg)?;
        migrate(&pool).await?;
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        listen::spawn(pool.clone(), changes.clone()).await?;
        tracing::debug!("connected to the postgres store");
        Ok(Self { pool, changes })
    }

    /// The connection pool, for diagnostics and benchmarks. Writing through it bypasses the
    /// store's rules; don't.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection (the change feed stops); later calls fail with
    /// [`StoreError::Fatal`].
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Detail of a [`StoreError::Fatal`] raised by the PostgreSQL store itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// The database URL does not parse.
    #[error("invalid PostgreSQL URL: {reason}")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The schema could not be brought up to date.
    #[error("apply the PostgreSQL migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Applies `migrations/postgres/`. Several hosts starting at once are serialised by sqlx's
/// advisory lock on the migrations table.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::migrate!("../migrations/postgres")
        .run(pool)
        .await
        .map_err(|e| StoreError::Fatal(Box::new(PgStoreError::Migrate(e))))
}

/// Creates a fresh, empty database next to the one `admin_url` names and returns its URL:
/// for tests and benchmarks that need a database of their own on a shared server.
pub async fn create_scratch_database(admin_url: &str) -> Result<String, StoreError> {
    let mut options: PgConnectOptions = admin_url.parse().map_err(|e| {
        StoreError::Fatal(Box::new(PgStoreError::BadUrl {
            reason: format!("{e}"),
        }))
    })?;
    options = options.log_statements(tracing::log::LevelFilter::Trace);
    let mut conn = options.connect().await.map_err(map_pg)?;
    let name = format!("loop_{}", uuid::Uuid::now_v7().simple());
    // A database name cannot be a bound parameter; this one is made of [a-z0-9_] only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(map_pg)?;
    let _ = sqlx::Connection::close(conn).await;
    let base = match admin_url.split_once('?') {
        Some((base, _)) => base,
        None => admin_url,
    };
    let query = admin_url.split_once('?').map(|(_, q)| q);
    let Some((server, _db)) = base.rsplit_once('/') else {
        return Err(StoreError::Fatal(Box::new(PgStoreError::BadUrl {
            reason: format!("`{admin_url}` names no database"),
        })));
    };
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

async fn batch(pool: &PgPool, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
    let mut outcome = BatchOutcome::default();
    if writes.is_empty() {
        return Ok(outcome);
    }
    let mut tx = pool.begin().await.map_err(map_pg)?;
    let mut rest = writes;
    while let Some((write, after)) = rest.split_first() {
        match write {
            StoreWrite::AppendEvent(event) => {
                // Consecutive appends of one run go in as one counter move and one insert.
                let group: Vec<&NewEvent> = rest
                    .iter()
                    .map_while(|w| match w {
                        StoreWrite::AppendEvent(e) if e.run_id == event.run_id => Some(e),
                        _ => None,
                    })
                    .collect();
                rest = &rest[group.len()..];
                let appended = records::append_events(&mut tx, event.run_id, &group).await?;
                outcome.events.extend(appended);
                continue;
            }
            StoreWrite::UpdateRun(run) => runs::update(&mut tx, run).await?,
            StoreWrite::InsertStep(step) => records::insert_step(&mut tx, step).await?,
            StoreWrite::UpdateStep(step) => records::update_step(&mut tx, step).await?,
            StoreWrite::RecordArtifact(artifact) => outcome
                .artifacts
                .push(records::record_artifact(&mut tx, artifact).await?),
            StoreWrite::Fence { run_id, epoch } => runs::fence(&mut tx, *run_id, *epoch).await?,
        }
        rest = after;
    }
    tx.commit().await.map_err(map_pg)?;
    Ok(outcome)
}

impl PgStore {
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.pool.acquire().await.map_err(map_pg)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_run(&self, run: &Run) -> Result<(), StoreError> {
        retry("create_run", || runs::create(&self.pool, run)).await
    }

    async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        retry("get_run", || async {
            runs::get(&mut *self.conn().await?, id).await
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        retry("list_runs", || runs::list(&self.pool, filter)).await
    }

    async fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        retry("update_run", || async {
            runs::update(&mut *self.conn().await?, run).await
        })
        .await
    }

    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError> {
        retry("claim_next_run", || runs::claim_next(&self.pool, req)).await
    }

    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        retry("renew_lease", || {
            runs::renew_lease(&self.pool, run_id, worker_id, until)
        })
        .await
    }

    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError> {
        retry("release_run", || {
            runs::release(&self.pool, run_id, worker_id)
        })
        .await
    }

    async fn insert_step(&self, step: &Step) -> Result<(), StoreError> {
        retry("insert_step", || async {
            records::insert_step(&mut *self.conn().await?, step).await
        })
        .await
    }

    async fn update_step(&self, step: &Step) -> Result<(), StoreError> {
        retry("update_step", || async {
            records::update_step(&mut *self.conn().await?, step).await
        })
        .await
    }

    async fn get_step(&self, id: StepId) -> Result<Step, StoreError> {
        retry("get_step", || async {
            records::get_step(&mut *self.conn().await?, id).await
        })
        .await
    }

    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError> {
        retry("list_steps", || async {
            records::list_steps(&mut *self.conn().await?, run_id).await
        })
        .await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError> {
        let mut appended = retry("append_event", || async {
            let mut tx = self.pool.begin().await.map_err(map_pg)?;
            let appended = records::append_events(&mut tx, event.run_id, &[event]).await?;
            tx.commit().await.map_err(map_pg)?;
            Ok(appended)
        })
        .await?;
        appended
            .pop()
            .ok_or_else(|| StoreError::Fatal("an append returned no event".into()))
    }

    async fn events_after(
        &self,
        run_id: RunId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        retry("events_after", || async {
            records::events_after(&mut *self.conn().await?, run_id, after_seq, limit).await
        })
        .await
    }

    async fn last_event_seq(&self, run_id: RunId) -> Result<u64, StoreError> {
        retry("last_event_seq", || async {
            records::last_event_seq(&mut *self.conn().await?, run_id).await
        })
        .await
    }

    async fn record_artifact(&self, artifact: &NewArtifact) -> Result<Artifact, StoreError> {
        retry("record_artifact", || async {
            records::record_artifact(&mut *self.conn().await?, artifact).await
        })
        .await
    }

    async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
        retry("list_artifacts", || async {
            records::list_artifacts(&mut *self.conn().await?, run_id).await
        })
        .await
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        retry("count_runs_by_status", || runs::count_by_status(&self.pool)).await
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
        retry("write_batch", || batch(&self.pool, writes)).await
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }
}
