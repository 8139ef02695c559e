//! # loop-store
//!
//! Implementations of [`loop_engine::Store`]. Today: [`SqliteStore`](sqlite::SqliteStore), an
//! embedded SQLite database through sqlx with the migrations of `migrations/`. The trait keeps
//! claiming, leases and event sequence numbers backend-neutral so a Postgres store for several
//! hosts can follow.
