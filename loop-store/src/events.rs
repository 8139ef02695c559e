//! The `events` table: the append-only, per-run numbered event log.
//!
//! Appending is the hot path (every agent output line may become an event), so it is one
//! statement, one round trip to the connection's worker thread and one commit.

use loop_engine::backend::StoreError;
use loop_engine::domain::{Event, NewEvent, RunId};
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::columns::{self, int_value, json_text};
use crate::error::{is_foreign_key_violation, map_sqlx};
use crate::runs;

/// Numbers and inserts the event in one statement. A writing statement in autocommit mode
/// takes SQLite's write lock when it starts, before it reads anything (exactly what
/// `BEGIN IMMEDIATE` does for a multi-statement transaction), and a busy lock is waited for
/// under `busy_timeout` with a fresh snapshot. So `MAX(seq) + 1` is read by the only writer
/// and cannot race with another connection or process; the primary key (run_id, seq) would
/// reject a duplicate regardless. Selecting from `runs` makes an unknown run insert nothing
/// (and return no row) instead of tripping the foreign key.
const APPEND: &str = "INSERT INTO events (run_id, seq, step_id, kind, ts, payload) \
     SELECT r.id, COALESCE((SELECT MAX(e.seq) FROM events AS e WHERE e.run_id = r.id), 0) + 1, \
            ?2, ?3, ?4, ?5 \
     FROM runs AS r WHERE r.id = ?1 \
     RETURNING seq";

pub(crate) async fn append(writer: &SqlitePool, event: &NewEvent) -> Result<Event, StoreError> {
    let payload = json_text(&event.payload, "event.payload")?;
    // `fetch_all` steps the statement to its end, so the implicit transaction is committed
    // before the call returns, whatever the driver does with unread rows.
    let result = sqlx::query_scalar::<_, i64>(APPEND)
        .bind(event.run_id.to_string())
        .bind(event.step_id.map(|id| id.to_string()))
        .bind(event.kind.as_str())
        .bind(event.ts)
        .bind(payload)
        .fetch_all(writer)
        .await;
    let seqs = match result {
        Ok(seqs) => seqs,
        // The run exists (otherwise nothing would have been inserted), so the violated
        // foreign key is the step's.
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(match event.step_id {
                Some(step_id) => StoreError::step_not_found(step_id),
                None => map_sqlx(e),
            });
        }
        Err(e) => return Err(map_sqlx(e)),
    };
    let Some(&seq) = seqs.first() else {
        return Err(StoreError::run_not_found(event.run_id));
    };
    let seq =
        u64::try_from(seq).map_err(|e| crate::error::SqliteStoreError::corrupt("events.seq", e))?;
    Ok(Event {
        seq,
        run_id: event.run_id,
        step_id: event.step_id,
        kind: event.kind,
        ts: event.ts,
        payload: event.payload.clone(),
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    Ok(Event {
        seq: columns::int(row, "events.seq")?,
        run_id: columns::parse(row, "events.run_id")?,
        step_id: columns::parse_opt(row, "events.step_id")?,
        kind: columns::parse(row, "events.kind")?,
        ts: columns::get(row, "events.ts")?,
        payload: columns::json(row, "events.payload")?,
    })
}

pub(crate) async fn after(
    reader: &SqlitePool,
    run_id: RunId,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    runs::ensure_exists(reader, run_id).await?;
    // A seq beyond i64 cannot exist, so clamping keeps "nothing after it" true.
    let after_seq = int_value(after_seq, "after_seq").unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT run_id, seq, step_id, kind, ts, payload FROM events \
         WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(run_id.to_string())
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn last_seq(reader: &SqlitePool, run_id: RunId) -> Result<u64, StoreError> {
    let row: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT (SELECT MAX(e.seq) FROM events AS e WHERE e.run_id = r.id) \
         FROM runs AS r WHERE r.id = ?",
    )
    .bind(run_id.to_string())
    .fetch_optional(reader)
    .await
    .map_err(map_sqlx)?;
    match row {
        None => Err(StoreError::run_not_found(run_id)),
        Some(seq) => u64::try_from(seq.unwrap_or(0))
            .map_err(|e| crate::error::SqliteStoreError::corrupt("events.seq", e)),
    }
}
