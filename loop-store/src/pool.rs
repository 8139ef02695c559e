//! Opening the database: connection options with every pragma, the two pools, and the
//! embedded migrations.
//!
//! Pragmas are set in [`SqliteConnectOptions`], which applies them to every connection the
//! pools ever open; a `PRAGMA` query would only reach the one pooled connection it ran on.
//!
//! Writes go through a pool of exactly one connection. SQLite admits one writer at a time
//! anyway; queueing writers in-process on the pool (a fair async queue) is much cheaper than
//! letting several connections collide on the database lock and sleep in SQLite's busy
//! handler. Reads use a few more connections, which WAL lets run beside the writer. Other
//! processes on the same file are still serialised by the lock and `busy_timeout`.

use std::path::Path;
use std::time::Duration;

use loop_engine::backend::StoreError;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{SqliteStoreError, map_sqlx};

/// Tuning of [`SqliteStore::open_with`](crate::SqliteStore::open_with).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// How long a statement waits for another connection's (or process's) write lock before
    /// failing with "database is locked". At least a few seconds in production.
    pub busy_timeout: Duration,
    /// Connections for reads (at least 1).
    pub read_connections: u32,
    /// How long a call waits for a free pooled connection before it is `Retryable`.
    pub acquire_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
            read_connections: 4,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

impl OpenOptions {
    /// The same options with another busy timeout.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
}

/// The pools of one open database.
#[derive(Clone, Debug)]
pub(crate) struct Pools {
    /// Exactly one connection: every write goes through it.
    pub(crate) writer: SqlitePool,
    /// Connections for reads.
    pub(crate) reader: SqlitePool,
}

impl Pools {
    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

fn base_options(options: &OpenOptions) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout)
        // WAL and NORMAL: a commit is one append to the log, durable against a process crash
        // (the contract), and readers never block the writer. Only a power loss can drop the
        // last commits, never corrupt the database.
        .synchronous(SqliteSynchronous::Normal)
        .statement_cache_capacity(64)
}

/// The settings every pool shares.
///
/// sqlx pings a pooled connection before handing it out by default, to find connections a
/// server hung up. An SQLite connection is a thread of this process with no other end to
/// hang up (a failed worker fails the next statement anyway), so the ping only cost every
/// call one more round trip to that thread (about a third of a lone append's time, measured
/// with `loop-bench scale`).
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

/// The settings of the writer pool: [`pool_options`], and a writer connection that comes
/// back still inside a transaction is closed rather than kept.
///
/// A transaction whose `COMMIT` failed (a full disk, an I/O error) was rolled back by SQLite
/// itself; the `ROLLBACK` sqlx then sends finds no transaction and fails, which leaves sqlx's
/// count of open transactions at one for good, and every later `BEGIN` on that connection
/// fails with "attempted to call begin_with at non-zero transaction depth": the store was
/// wedged until restart. The check runs when the connection is handed back (after the
/// rollback a dropped transaction queued has run), so the next write gets a fresh connection.
fn writer_pool_options() -> SqlitePoolOptions {
    pool_options().after_release(|conn, _meta| {
        Box::pin(async move {
            // Any command waits for the queued rollback to run first.
            conn.ping().await?;
            let clean = !conn.is_in_transaction();
            if !clean {
                tracing::warn!(
                    "the writer connection is left inside a failed transaction; replacing it"
                );
            }
            Ok(clean)
        })
    })
}

/// Page cache of each read connection, as a `PRAGMA cache_size` value (negative: KiB).
///
/// SQLite's default is 2 MiB per connection, and every connection fills its cache as the
/// history grows: with one writer and four readers that is up to 10 MiB of a long-lived
/// daemon's heap. A reader's cache buys little: in WAL mode a connection drops its whole
/// cache whenever another connection has committed since its last read, which on a busy
/// daemon is nearly every read, and the pages it re-reads come from the OS page cache. A
/// few hundred KiB still hold the B-tree interior pages one statement revisits. The writer
/// keeps the default: nobody else invalidates its cache, so it does save reads.
const READER_CACHE_SIZE: &str = "-256";

/// Opens (creating if missing) the database file at `path`, migrates it, and returns its pools.
pub(crate) async fn open_file(path: &Path, options: &OpenOptions) -> Result<Pools, StoreError> {
    let connect = base_options(options)
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let writer = writer_pool_options()
        .max_connections(1)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect.clone())
        .await
        .map_err(map_sqlx)?;
    // Migrate before the readers connect, so they never see a half-created schema.
    migrate(&writer).await?;
    let reader = pool_options()
        .max_connections(options.read_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect.pragma("cache_size", READER_CACHE_SIZE))
        .await
        .map_err(map_sqlx)?;
    Ok(Pools { writer, reader })
}

/// Opens a private in-memory database (for tests and throwaway embeddings).
///
/// An in-memory database lives exactly as long as its one connection, so both roles share a
/// single connection that the pool never closes.
pub(crate) async fn open_memory(options: &OpenOptions) -> Result<Pools, StoreError> {
    let connect = base_options(options).in_memory(true);
    let pool = pool_options()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(map_sqlx)?;
    migrate(&pool).await?;
    Ok(Pools {
        writer: pool.clone(),
        reader: pool,
    })
}

/// How often a failed migration is retried: a second process opening a fresh file at the
/// same moment can fail the first attempt (both create the tables), and the retry then finds
/// the migration applied.
const MIGRATE_ATTEMPTS: u32 = 3;

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut attempt = 1;
    loop {
        match sqlx::migrate!("../migrations").run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MIGRATE_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "database migration failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(StoreError::Fatal(Box::new(SqliteStoreError::Migrate(e)))),
        }
    }
}
