//! How PostgreSQL and sqlx failures become [`StoreError`]s. A lost or refused connection, a
//! serialization failure or a deadlock is `Retryable` (nothing of the transaction was
//! applied); a duplicate key is `Conflict`; anything else is `Fatal`.

use loop_engine::backend::StoreError;

/// SQLSTATE classes and codes the mapping needs
/// (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn retryable_code(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // operator intervention (shutdown, cannot connect now)
        || matches!(
            code,
            "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available
            | "53300" // too_many_connections
        )
}

/// True when `err` is a foreign key violation of the constraint `constraint`.
pub(crate) fn violates(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23503") && db.constraint() == Some(constraint))
}

/// Maps an sqlx error of the PostgreSQL store to a [`StoreError`].
pub(crate) fn map_pg(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if retryable_code(&code) {
                StoreError::Retryable(db.into_error())
            } else if code == "23505" {
                StoreError::Conflict {
                    detail: db.message().to_owned(),
                }
            } else {
                StoreError::Fatal(db.into_error())
            }
        }
        sqlx::Error::RowNotFound => StoreError::NotFound {
            what: "row".to_owned(),
        },
        e @ (sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)) => StoreError::Retryable(Box::new(e)),
        other => StoreError::Fatal(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_contention_codes_are_retryable() {
        for code in ["08006", "08001", "57P01", "40001", "40P01", "53300"] {
            assert!(retryable_code(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22P02"] {
            assert!(!retryable_code(code), "{code}");
        }
        assert!(matches!(
            map_pg(sqlx::Error::PoolTimedOut),
            StoreError::Retryable(_)
        ));
        assert!(matches!(
            map_pg(sqlx::Error::Io(std::io::Error::other("reset"))),
            StoreError::Retryable(_)
        ));
        assert!(matches!(
            map_pg(sqlx::Error::PoolClosed),
            StoreError::Fatal(_)
        ));
    }
}
