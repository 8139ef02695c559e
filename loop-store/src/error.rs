//! How SQLite and sqlx failures become [`StoreError`]s: the engine branches on the variant
//! (retry a busy database, report a conflict, give up on a broken disk), so the mapping lives
//! in one place.

use loop_engine::backend::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};

/// SQLite primary result codes (the low byte of an extended code) that the mapping needs.
/// See <https://www.sqlite.org/rescode.html>.
mod code {
    pub(super) const BUSY: i64 = 5;
    pub(super) const LOCKED: i64 = 6;
    pub(super) const CONSTRAINT: i64 = 19;
}

/// Detail of a [`StoreError::Fatal`] raised by this crate rather than by SQLite.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteStoreError {
    /// A stored value could not be turned back into the domain type: the row is corrupt or
    /// was written by an incompatible version.
    #[error("read column `{column}` with an invalid value")]
    CorruptColumn {
        /// The column (`table.column`).
        column: &'static str,
        /// Why the value was rejected.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value cannot be stored, e.g. a path that is not valid UTF-8.
    #[error("store field `{field}`: {reason}")]
    UnstorableValue {
        /// The field (`run.spec_path`, ...).
        field: &'static str,
        /// Why it cannot be stored.
        reason: String,
    },
    /// The database's directory cannot take writes (full or read-only filesystem).
    #[error("the data dir {} cannot take writes: {problem}", dir.display())]
    DataDir {
        /// The directory of the database file.
        dir: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Writes failed and a probe write fails too.
    #[error("writes fail: {probe} (the last failed write: {last})")]
    WritesFailing {
        /// The error of the last write that failed.
        last: String,
        /// The error of the health check's probe write.
        probe: String,
    },
    /// The database schema could not be brought up to date.
    #[error("apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl SqliteStoreError {
    /// A [`StoreError::Fatal`] for a column whose value cannot be decoded.
    pub(crate) fn corrupt(
        column: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Fatal(Box::new(Self::CorruptColumn {
            column,
            source: source.into(),
        }))
    }

    /// A [`StoreError::Fatal`] for a value that cannot be written.
    pub(crate) fn unstorable(field: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Fatal(Box::new(Self::UnstorableValue {
            field,
            reason: reason.into(),
        }))
    }
}

/// The SQLite primary result code of a database error, if it carries one.
fn primary_code(db: &dyn DatabaseError) -> Option<i64> {
    let extended: i64 = db.code()?.parse().ok()?;
    Some(extended & 0xff)
}

/// True when `err` is a violated foreign key (a row that names a parent that does not exist).
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation)
}

/// Maps any sqlx error to the [`StoreError`] variant the engine acts on.
///
/// - busy or locked database, a pool that had no free connection in time: `Retryable` (the
///   statement was not applied, the same call may succeed later);
/// - a violated constraint (duplicate id, unknown parent, bad spelling): `Conflict`;
/// - "no rows" where one was required: `NotFound`;
/// - everything else (I/O, full or read-only disk, corruption, a crashed worker): `Fatal`.
pub(crate) fn map_sqlx(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => match primary_code(db.as_ref()) {
            Some(code::BUSY | code::LOCKED) => StoreError::Retryable(db.into_error()),
            Some(code::CONSTRAINT) => StoreError::Conflict {
                detail: db.message().to_owned(),
            },
            _ => StoreError::Fatal(db.into_error()),
        },
        sqlx::Error::RowNotFound => StoreError::NotFound {
            what: "row".to_owned(),
        },
        sqlx::Error::PoolTimedOut => StoreError::Retryable(Box::new(sqlx::Error::PoolTimedOut)),
        other => StoreError::Fatal(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_retryable_and_closed_pools_fatal() {
        assert!(matches!(
            map_sqlx(sqlx::Error::PoolTimedOut),
            StoreError::Retryable(_)
        ));
        assert!(matches!(
            map_sqlx(sqlx::Error::PoolClosed),
            StoreError::Fatal(_)
        ));
        assert!(matches!(
            map_sqlx(sqlx::Error::RowNotFound),
            StoreError::NotFound { .. }
        ));
        let io = std::io::Error::other("disk gone");
        assert!(matches!(
            map_sqlx(sqlx::Error::Io(io)),
            StoreError::Fatal(_)
        ));
    }

    #[test]
    fn corrupt_columns_are_fatal_and_named() {
        let err = SqliteStoreError::corrupt("runs.status", "bad spelling");
        let StoreError::Fatal(source) = err else {
            panic!("a corrupt column must be fatal");
        };
        assert_eq!(
            source.to_string(),
            "read column `runs.status` with an invalid value"
        );
    }
}
