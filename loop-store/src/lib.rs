//! # loop-store
//!
//! Implementations of [`loop_engine::Store`]. Today: [`SqliteStore`], an embedded SQLite
//! database through sqlx with the migrations of `migrations/`. The trait keeps claiming,
//! leases and event sequence numbers backend-neutral so a Postgres store for several hosts can
//! follow.
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
mod pool;
mod retry;
mod runs;
mod steps;
mod store;

pub use error::SqliteStoreError;
pub use pool::OpenOptions;
pub use store::SqliteStore;
