//! The `events` table: the append-only, per-run numbered event log.
//!
//! Appending is the hot path (every agent output line may become an event). One event is one
//! statement, one round trip to the connection's worker thread and one commit; a group of
//! events (queued concurrent appends, or the appends of a batch) is also one statement, with
//! the same numbering rule, so a group costs one round trip and one commit however large.

use std::collections::HashMap;

use loop_engine::backend::StoreError;
use loop_engine::domain::{Event, NewEvent, RunId};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};

use crate::columns::{self, int_value, json_text};
use crate::error::{SqliteStoreError, is_foreign_key_violation, map_sqlx};
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

/// Numbers and inserts a group of events, given as one JSON array (so that one statement text
/// serves every group size and stays in the statement cache), in one statement: the `i`-th
/// event of a run in the group gets the run's `MAX(seq) + i`, in group order. [`APPEND`]'s
/// reasoning holds: the statement holds the write lock before it reads. SQLite computes an
/// `INSERT ... SELECT` whose SELECT reads the target table completely before it inserts, so
/// every `MAX(seq)` is the one from before the group. Events of unknown runs are left out
/// (they return no row); an unknown step fails the whole statement with its foreign key.
const APPEND_GROUP: &str = "INSERT INTO events (run_id, seq, step_id, kind, ts, payload) \
     SELECT n.run_id, \
            COALESCE((SELECT MAX(e.seq) FROM events AS e WHERE e.run_id = n.run_id), 0) \
                + ROW_NUMBER() OVER (PARTITION BY n.run_id ORDER BY n.i), \
            n.step_id, n.kind, n.ts, n.payload \
     FROM (SELECT j.key AS i, j.value ->> '$.r' AS run_id, j.value ->> '$.s' AS step_id, \
                  j.value ->> '$.k' AS kind, j.value ->> '$.t' AS ts, j.value ->> '$.p' AS payload \
           FROM json_each(?1) AS j) AS n \
     WHERE EXISTS (SELECT 1 FROM runs AS r WHERE r.id = n.run_id) \
     RETURNING run_id, seq";

/// The most events [`append_group`] takes in one statement; a bigger group is split. It
/// bounds the size of the statement's JSON argument and of the write lock's hold time.
pub(crate) const MAX_GROUP: usize = 512;

fn appended(event: &NewEvent, seq: i64) -> Result<Event, StoreError> {
    let seq = u64::try_from(seq).map_err(|e| SqliteStoreError::corrupt("events.seq", e))?;
    Ok(Event {
        seq,
        run_id: event.run_id,
        step_id: event.step_id,
        kind: event.kind,
        ts: event.ts,
        payload: event.payload.clone(),
    })
}

/// Appends one event (see [`APPEND`]); on a connection in autocommit mode it is committed
/// when this returns.
pub(crate) async fn append(
    conn: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<Event, StoreError> {
    let payload = json_text(&event.payload, "event.payload")?;
    // `fetch_all` steps the statement to its end, so the implicit transaction is committed
    // before the call returns, whatever the driver does with unread rows.
    let result = sqlx::query_scalar::<_, i64>(APPEND)
        .bind(event.run_id.to_string())
        .bind(event.step_id.map(|id| id.to_string()))
        .bind(event.kind.as_str())
        .bind(event.ts)
        .bind(payload)
        .fetch_all(&mut *conn)
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
    match seqs.first() {
        Some(&seq) => appended(event, seq),
        None => Err(StoreError::run_not_found(event.run_id)),
    }
}

/// What [`append_group`] did.
#[derive(Debug)]
pub(crate) enum Group {
    /// The events of existing runs were appended: for each event of the group, in order, the
    /// appended event, or `None` when its run does not exist.
    Appended(Vec<Option<Event>>),
    /// An event names a step that does not exist, so the statement failed and nothing was
    /// appended. Appending the events one by one tells which one it was.
    UnknownStep,
}

/// One event as an element of [`APPEND_GROUP`]'s JSON argument.
#[derive(serde::Serialize)]
struct GroupRow<'a> {
    r: String,
    s: Option<String>,
    k: &'a str,
    t: i64,
    /// The payload's JSON text, as a JSON string: `->>` gives back exactly this text, where
    /// extracting a nested value would re-render it (numbers included) in SQLite's spelling.
    p: String,
}

/// Appends `events` (at most [`MAX_GROUP`]) in one statement (see [`APPEND_GROUP`]). On a
/// connection in autocommit mode the group is committed when this returns; inside a
/// transaction it is part of it. Either way the statement is atomic: on an error (and on
/// [`Group::UnknownStep`]) nothing of the group was appended.
pub(crate) async fn append_group(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
) -> Result<Group, StoreError> {
    debug_assert!(events.len() <= MAX_GROUP, "groups are split by the caller");
    let rows = events
        .iter()
        .map(|event| {
            Ok(GroupRow {
                r: event.run_id.to_string(),
                s: event.step_id.map(|id| id.to_string()),
                k: event.kind.as_str(),
                t: event.ts,
                p: json_text(&event.payload, "event.payload")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let rows = json_text(&rows, "event group")?;
    let result = sqlx::query_as::<_, (String, i64)>(APPEND_GROUP)
        .bind(rows)
        // `fetch_all` steps the statement to its end (see `append`).
        .fetch_all(&mut *conn)
        .await;
    let returned = match result {
        Ok(returned) => returned,
        Err(e) if is_foreign_key_violation(&e) => return Ok(Group::UnknownStep),
        Err(e) => return Err(map_sqlx(e)),
    };
    // The rows come back in no promised order. A run's events got consecutive seqs in group
    // order, so its lowest returned seq belongs to its first event.
    let mut first: HashMap<String, (i64, usize)> = HashMap::new();
    for (run_id, seq) in returned {
        let entry = first.entry(run_id).or_insert((seq, 0));
        entry.0 = entry.0.min(seq);
        entry.1 += 1;
    }
    let mut rank: HashMap<RunId, i64> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let Some(&(lowest, _)) = first.get(&event.run_id.to_string()) else {
            out.push(None);
            continue;
        };
        let rank = rank.entry(event.run_id).or_insert(0);
        out.push(Some(appended(event, lowest + *rank)?));
        *rank += 1;
    }
    // Every event of a run that exists must have been inserted; anything else means the
    // statement did not do what this code assumes, and guessing seqs would be worse.
    for (run_id, seen) in &rank {
        let inserted = first.get(&run_id.to_string()).map_or(0, |&(_, n)| n);
        if usize::try_from(*seen).ok() != Some(inserted) {
            return Err(StoreError::Fatal(
                format!("the event group of run {run_id} inserted {inserted} rows, not {seen}")
                    .into(),
            ));
        }
    }
    Ok(Group::Appended(out))
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
        Some(seq) => {
            u64::try_from(seq.unwrap_or(0)).map_err(|e| SqliteStoreError::corrupt("events.seq", e))
        }
    }
}
