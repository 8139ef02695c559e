//! Conversions between domain values and PostgreSQL columns, as `crate::columns` does for
//! SQLite: reading never panics, a value that does not decode is a [`StoreError::Fatal`]
//! naming its column.

use std::path::PathBuf;
use std::str::FromStr;

use loop_engine::backend::StoreError;
use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use crate::error::SqliteStoreError as Detail;

/// Reads column `column` (`table.column`) of `row` as `T`.
pub(crate) fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    let name = column.rsplit_once('.').map_or(column, |(_, name)| name);
    row.try_get(name).map_err(|e| Detail::corrupt(column, e))
}

/// Reads a TEXT column and parses it (enum spellings, ids, exit reasons).
pub(crate) fn parse<T>(row: &PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: &str = get(row, column)?;
    text.parse().map_err(|e| Detail::corrupt(column, e))
}

/// Reads a nullable TEXT column and parses it.
pub(crate) fn parse_opt<T>(row: &PgRow, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<&str> = get(row, column)?;
    text.map(str::parse)
        .transpose()
        .map_err(|e| Detail::corrupt(column, e))
}

/// Reads a BIGINT column into a narrower or unsigned integer type.
pub(crate) fn int<T>(row: &PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let value: i64 = get(row, column)?;
    T::try_from(value).map_err(|e| Detail::corrupt(column, e))
}

/// Reads a nullable BIGINT column into a narrower or unsigned integer type.
pub(crate) fn int_opt<T>(row: &PgRow, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let value: Option<i64> = get(row, column)?;
    value
        .map(T::try_from)
        .transpose()
        .map_err(|e| Detail::corrupt(column, e))
}

/// Reads a TEXT column holding JSON.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: &str = get(row, column)?;
    serde_json::from_str(text).map_err(|e| Detail::corrupt(column, e))
}

/// Reads a nullable TEXT column holding JSON.
pub(crate) fn json_opt<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    let text: Option<&str> = get(row, column)?;
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| Detail::corrupt(column, e))
}

/// Reads a TEXT column holding a path.
pub(crate) fn path(row: &PgRow, column: &'static str) -> Result<PathBuf, StoreError> {
    let text: String = get(row, column)?;
    Ok(PathBuf::from(text))
}

/// Reads a nullable TEXT column holding a path.
pub(crate) fn path_opt(row: &PgRow, column: &'static str) -> Result<Option<PathBuf>, StoreError> {
    let text: Option<String> = get(row, column)?;
    Ok(text.map(PathBuf::from))
}
