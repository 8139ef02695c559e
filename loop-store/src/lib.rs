//! # loop-store
//!
//! Implementations of [`loop_engine::Store`]: [`SqliteStore`], an embedded SQLite database
//! through sqlx with the migrations of `migrations/` (one host, the default), and [`PgStore`],
//! PostgreSQL with the migrations of `migrations/postgres/`, which several loopd hosts share
//! (SPEC §14). Both pass the same store contract suite.
//!
//! ```no_run
//! # async fn demo() -> Result<(), loop_engine::backend::StoreError> {
//! use loop_engine::Store;
//! use loop_store::SqliteStore;
//!
//! let store = SqliteStore::open(std::path::Path::new("/var/lib/loopd/loop.db")).await?;
//! let counts = store.count_runs_by_status().await?;
//! # let _ = counts;
//! store.close().await;
//! # Ok(())
//! # }
//! ```

mod append_queue;
mod artifacts;
mod batch;
mod columns;
mod error;
mod events;
mod health;
mod pg;
mod pool;
mod retry;
mod runs;
mod steps;
mod store;

pub use error::SqliteStoreError;
pub use pg::{PgOptions, PgStore, PgStoreError, create_scratch_database};
pub use pool::OpenOptions;
pub use store::SqliteStore;
