//! Whether the store can write: the last write failure the store met, the free space of the
//! database's filesystem, and a probe write that tells when a failing store works again.
//!
//! A read alone says nothing about writes: a full disk or a read-only data dir serves every
//! read and refuses every write. Reads of a healthy store cost no write; only while a write
//! failure is remembered does the check write (one header page) to find out whether writes
//! work again.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use loop_engine::backend::StoreError;
use sqlx::sqlite::SqlitePool;

use crate::error::{SqliteStoreError, map_sqlx};

/// Below this many free bytes on the database's filesystem the store is reported as unable
/// to write: a step's events and artifacts need more than that.
pub(crate) const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// What the store knows about its own writes.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    /// The error of the last write, while no write has succeeded since.
    last_failure: Mutex<Option<String>>,
}

impl WriteHealth {
    /// Remembers the outcome of a write: a fatal error (the disk, the file) until a later
    /// write succeeds. Busy databases, conflicts and unknown ids say nothing about the disk.
    pub(crate) fn note<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.clear(),
            Err(StoreError::Fatal(e)) => {
                *self.lock() = Some(chain(e.as_ref()));
            }
            Err(_) => {}
        }
    }

    fn clear(&self) {
        let mut last = self.lock();
        if last.is_some() {
            tracing::info!("store writes work again");
            *last = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The health check of a store whose database is `path` (None: in memory): the free
    /// space, then, while a write failure is remembered, a probe write.
    pub(crate) async fn check(
        &self,
        writer: &SqlitePool,
        path: Option<&Path>,
    ) -> Result<(), StoreError> {
        if let Some(dir) = path.and_then(Path::parent) {
            check_space(dir)?;
        }
        let Some(last) = self.lock().clone() else {
            return Ok(());
        };
        match probe(writer).await {
            Ok(()) => {
                self.clear();
                Ok(())
            }
            Err(e) => Err(StoreError::Fatal(Box::new(
                SqliteStoreError::WritesFailing {
                    last,
                    probe: chain(&e),
                },
            ))),
        }
    }
}

/// Refuses a filesystem that is read-only or has less than [`MIN_FREE_BYTES`] free.
fn check_space(dir: &Path) -> Result<(), StoreError> {
    let stat = match rustix::fs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => {
            return Err(StoreError::Fatal(Box::new(SqliteStoreError::DataDir {
                dir: dir.to_path_buf(),
                problem: format!("cannot read its filesystem's free space: {e}"),
            })));
        }
    };
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(unwritable(
            dir,
            "its filesystem is mounted read-only".into(),
        ));
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < MIN_FREE_BYTES {
        return Err(unwritable(
            dir,
            format!("its filesystem is full ({free} bytes free, at least {MIN_FREE_BYTES} needed)"),
        ));
    }
    Ok(())
}

fn unwritable(dir: &Path, problem: String) -> StoreError {
    StoreError::Fatal(Box::new(SqliteStoreError::DataDir {
        dir: PathBuf::from(dir),
        problem,
    }))
}

/// One committed write that changes nothing: `user_version` set to its own value rewrites the
/// database header page through the WAL like any commit.
async fn probe(writer: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = writer.acquire().await.map_err(map_sqlx)?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    // A pragma takes no bound parameters; the value is an integer SQLite just returned.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA user_version = {version}"
    )))
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// `err` and its sources, joined by ": ".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal(text: &str) -> Result<(), StoreError> {
        Err(StoreError::Fatal(Box::new(std::io::Error::other(
            text.to_owned(),
        ))))
    }

    #[test]
    fn only_fatal_errors_are_remembered_and_a_success_clears_them() {
        let health = WriteHealth::default();
        health.note::<()>(&Err(StoreError::Conflict {
            detail: "duplicate".into(),
        }));
        assert!(health.lock().is_none());
        health.note(&fatal("database or disk is full"));
        assert_eq!(health.lock().as_deref(), Some("database or disk is full"));
        health.note(&Ok(()));
        assert!(health.lock().is_none());
    }

    #[tokio::test]
    async fn a_remembered_failure_is_cleared_by_a_working_probe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::SqliteStore::open(&dir.path().join("probe.db"))
            .await
            .expect("open");
        let health = WriteHealth::default();
        health.note(&fatal("disk I/O error"));
        health
            .check(store.write_pool(), Some(&dir.path().join("probe.db")))
            .await
            .expect("the probe writes");
        assert!(health.lock().is_none());
    }
}
