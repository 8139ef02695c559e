//! Conversions between domain values and SQLite columns. Reading never panics: a value that
//! does not decode is a [`StoreError::Fatal`] naming its column, so one corrupt row cannot
//! take the daemon down.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use loop_engine::backend::StoreError;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Decode, Row, Sqlite, Type};

use crate::error::{SqliteStoreError, map_sqlx};

/// Appends one bound value to `args`.
pub(crate) fn add_arg<'q, T>(args: &mut SqliteArguments, value: T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'q, Sqlite> + Type<Sqlite> + 'q,
{
    args.add(value)
        .map_err(|e| map_sqlx(sqlx::Error::Encode(e)))
}

/// Reads column `column` of `row` as `T`.
pub(crate) fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column_name(column))
        .map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// The column name a query returns for `table.column`.
fn column_name(column: &'static str) -> &'static str {
    column.rsplit_once('.').map_or(column, |(_, name)| name)
}

/// Reads a TEXT column and parses it (enum spellings, ids, exit reasons).
pub(crate) fn parse<T>(row: &SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: &str = get(row, column)?;
    text.parse()
        .map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads a nullable TEXT column and parses it.
pub(crate) fn parse_opt<T>(row: &SqliteRow, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: Option<&str> = get(row, column)?;
    text.map(str::parse)
        .transpose()
        .map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads an INTEGER column into a narrower or unsigned integer type.
pub(crate) fn int<T>(row: &SqliteRow, column: &'static str) -> Result<T, StoreError>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let value: i64 = get(row, column)?;
    T::try_from(value).map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads a nullable INTEGER column into a narrower or unsigned integer type.
pub(crate) fn int_opt<T>(row: &SqliteRow, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let value: Option<i64> = get(row, column)?;
    value
        .map(T::try_from)
        .transpose()
        .map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads a TEXT column holding JSON.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: &str = get(row, column)?;
    serde_json::from_str(text).map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads a nullable TEXT column holding JSON.
pub(crate) fn json_opt<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    let text: Option<&str> = get(row, column)?;
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| SqliteStoreError::corrupt(column, e))
}

/// Reads a TEXT column holding a path.
pub(crate) fn path(row: &SqliteRow, column: &'static str) -> Result<PathBuf, StoreError> {
    let text: String = get(row, column)?;
    Ok(PathBuf::from(text))
}

/// Reads a nullable TEXT column holding a path.
pub(crate) fn path_opt(
    row: &SqliteRow,
    column: &'static str,
) -> Result<Option<PathBuf>, StoreError> {
    let text: Option<String> = get(row, column)?;
    Ok(text.map(PathBuf::from))
}

/// The TEXT to store for a path. Paths are stored as UTF-8 so that they stay readable and
/// comparable in SQL; a path that is not UTF-8 is refused rather than stored lossily.
pub(crate) fn path_text<'p>(path: &'p Path, field: &'static str) -> Result<&'p str, StoreError> {
    path.to_str()
        .ok_or_else(|| SqliteStoreError::unstorable(field, "path is not valid UTF-8"))
}

/// [`path_text`] for an optional path.
pub(crate) fn path_text_opt<'p>(
    path: Option<&'p Path>,
    field: &'static str,
) -> Result<Option<&'p str>, StoreError> {
    path.map(|p| path_text(p, field)).transpose()
}

/// The INTEGER to store for an unsigned value; SQLite integers are signed 64-bit.
pub(crate) fn int_value<T>(value: T, field: &'static str) -> Result<i64, StoreError>
where
    T: TryInto<i64> + Copy + std::fmt::Display,
{
    value
        .try_into()
        .map_err(|_| SqliteStoreError::unstorable(field, format!("{value} does not fit in i64")))
}

/// The JSON TEXT to store for a value.
pub(crate) fn json_text<T: serde::Serialize>(
    value: &T,
    field: &'static str,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| SqliteStoreError::unstorable(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_column_names_read_the_bare_column() {
        assert_eq!(column_name("runs.status"), "status");
        assert_eq!(column_name("seq"), "seq");
    }

    #[test]
    fn unsigned_values_that_overflow_are_refused() {
        assert!(int_value(u64::MAX, "step.agent_start_time").is_err());
        assert_eq!(int_value(7u64, "step.agent_start_time").unwrap(), 7);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_are_refused() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(OsStr::from_bytes(b"/tmp/\xff"));
        let err = path_text(bad, "run.spec_path").unwrap_err();
        assert!(matches!(err, StoreError::Fatal(_)));
        assert_eq!(path_text(Path::new("/tmp/ok"), "x").unwrap(), "/tmp/ok");
    }
}
