//! The `artifacts` table: the files a run wrote, recorded once per `(run, location, path)`.

use loop_engine::backend::StoreError;
use loop_engine::domain::{Artifact, NewArtifact, RunId, now_ms};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use crate::columns::{self, path_text};
use crate::error::{is_foreign_key_violation, map_sqlx};
use crate::runs;

fn artifact_from_row(row: &SqliteRow) -> Result<Artifact, StoreError> {
    Ok(Artifact {
        id: columns::get(row, "artifacts.id")?,
        run_id: columns::parse(row, "artifacts.run_id")?,
        kind: columns::parse(row, "artifacts.kind")?,
        location: columns::parse(row, "artifacts.location")?,
        path: columns::path(row, "artifacts.path")?,
        checksum: columns::get(row, "artifacts.checksum")?,
        recorded_at: columns::get(row, "artifacts.recorded_at")?,
    })
}

/// Inserts the artifact or, when its `(run, location, path)` is known, updates kind,
/// checksum and time in place: one atomic statement either way.
pub(crate) async fn record(
    conn: &mut SqliteConnection,
    artifact: &NewArtifact,
) -> Result<Artifact, StoreError> {
    let result = sqlx::query(
        "INSERT INTO artifacts (run_id, kind, location, path, checksum, recorded_at) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (run_id, location, path) DO UPDATE SET \
             kind = excluded.kind, checksum = excluded.checksum, \
             recorded_at = excluded.recorded_at \
         RETURNING id, run_id, kind, location, path, checksum, recorded_at",
    )
    .bind(artifact.run_id.to_string())
    .bind(artifact.kind.as_str())
    .bind(artifact.location.as_str())
    .bind(path_text(&artifact.path, "artifact.path")?.to_owned())
    .bind(&artifact.checksum)
    .bind(now_ms())
    // `fetch_all` runs the statement to its end, so (in autocommit mode) it is committed
    // before this returns.
    .fetch_all(&mut *conn)
    .await;
    let rows = match result {
        Ok(rows) => rows,
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(StoreError::run_not_found(artifact.run_id));
        }
        Err(e) => return Err(map_sqlx(e)),
    };
    match rows.first() {
        Some(row) => artifact_from_row(row),
        None => Err(StoreError::Fatal(
            "the artifact upsert returned no row".into(),
        )),
    }
}

pub(crate) async fn list(reader: &SqlitePool, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
    runs::ensure_exists(reader, run_id).await?;
    let rows = sqlx::query(
        "SELECT id, run_id, kind, location, path, checksum, recorded_at FROM artifacts \
         WHERE run_id = ? ORDER BY id",
    )
    .bind(run_id.to_string())
    .fetch_all(reader)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(artifact_from_row).collect()
}
