//! Steps, events and artifacts on PostgreSQL. Every function takes a connection so that the
//! single write methods and `write_batch` share the statements (and their validation).

use loop_engine::backend::StoreError;
use loop_engine::domain::{Artifact, Event, NewArtifact, NewEvent, RunId, Step, StepId, now_ms};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};

use super::columns;
use super::error::{map_pg, violates};
use super::runs::{add, ensure_exists};
use crate::columns::{int_value, json_text, path_text, path_text_opt};

macro_rules! step_columns {
    () => {
        "id, run_id, seq, iteration, label, phase, status, attempt, started_at, ended_at, \
         exit_code, reason, prompt_path, output_path, head_before, head_after, agent_pid, \
         agent_start_time, usage, resources"
    };
}

fn step_from_row(row: &PgRow) -> Result<Step, StoreError> {
    Ok(Step {
        id: columns::parse(row, "steps.id")?,
        run_id: columns::parse(row, "steps.run_id")?,
        seq: columns::int(row, "steps.seq")?,
        iteration: columns::int(row, "steps.iteration")?,
        label: columns::get(row, "steps.label")?,
        phase: columns::parse(row, "steps.phase")?,
        status: columns::parse(row, "steps.status")?,
        attempt: columns::int(row, "steps.attempt")?,
        started_at: columns::get(row, "steps.started_at")?,
        ended_at: columns::get(row, "steps.ended_at")?,
        exit_code: columns::int_opt(row, "steps.exit_code")?,
        reason: columns::get(row, "steps.reason")?,
        prompt_path: columns::path_opt(row, "steps.prompt_path")?,
        output_path: columns::path_opt(row, "steps.output_path")?,
        head_before: columns::get(row, "steps.head_before")?,
        head_after: columns::get(row, "steps.head_after")?,
        agent_pid: columns::int_opt(row, "steps.agent_pid")?,
        agent_start_time: columns::int_opt(row, "steps.agent_start_time")?,
        usage: columns::json_opt(row, "steps.usage")?,
        resources: columns::json_opt(row, "steps.resources")?,
    })
}

/// $1..$18: seq, iteration, label, phase, status, attempt, started_at, ended_at, exit_code,
/// reason, prompt_path, output_path, head_before, head_after, agent_pid, agent_start_time,
/// usage, resources.
fn add_step_columns(args: &mut PgArguments, step: &Step) -> Result<(), StoreError> {
    add(args, i64::from(step.seq))?;
    add(args, i64::from(step.iteration))?;
    add(args, step.label.clone())?;
    add(args, step.phase.as_str())?;
    add(args, step.status.as_str())?;
    add(args, i64::from(step.attempt))?;
    add(args, step.started_at)?;
    add(args, step.ended_at)?;
    add(args, step.exit_code.map(i64::from))?;
    add(args, step.reason.clone())?;
    add(
        args,
        path_text_opt(step.prompt_path.as_deref(), "step.prompt_path")?.map(str::to_owned),
    )?;
    add(
        args,
        path_text_opt(step.output_path.as_deref(), "step.output_path")?.map(str::to_owned),
    )?;
    add(args, step.head_before.clone())?;
    add(args, step.head_after.clone())?;
    add(args, step.agent_pid.map(i64::from))?;
    let start_time = step
        .agent_start_time
        .map(|t| int_value(t, "step.agent_start_time"))
        .transpose()?;
    add(args, start_time)?;
    let usage = step
        .usage
        .as_ref()
        .map(|u| json_text(u, "step.usage"))
        .transpose()?;
    add(args, usage)?;
    let resources = step
        .resources
        .as_ref()
        .map(|r| json_text(r, "step.resources"))
        .transpose()?;
    add(args, resources)?;
    Ok(())
}

pub(crate) async fn insert_step(conn: &mut PgConnection, step: &Step) -> Result<(), StoreError> {
    let mut args = PgArguments::default();
    add_step_columns(&mut args, step)?;
    add(&mut args, step.id.to_string())?;
    add(&mut args, step.run_id.to_string())?;
    let result = sqlx::query_with(
        "INSERT INTO steps (seq, iteration, label, phase, status, attempt, started_at, \
         ended_at, exit_code, reason, prompt_path, output_path, head_before, head_after, \
         agent_pid, agent_start_time, usage, resources, id, run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20)",
        args,
    )
    .execute(&mut *conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if violates(&e, "steps_run_id_fkey") => Err(StoreError::run_not_found(step.run_id)),
        Err(e) => match map_pg(e) {
            StoreError::Conflict { .. } => Err(StoreError::Conflict {
                detail: format!(
                    "step {} (number {} of run {}) already exists",
                    step.id, step.seq, step.run_id
                ),
            }),
            other => Err(other),
        },
    }
}

pub(crate) async fn update_step(conn: &mut PgConnection, step: &Step) -> Result<(), StoreError> {
    let mut args = PgArguments::default();
    add_step_columns(&mut args, step)?;
    add(&mut args, step.id.to_string())?;
    // A step never moves to another run: `run_id` is not updated.
    let result = sqlx::query_with(
        "UPDATE steps SET seq = $1, iteration = $2, label = $3, phase = $4, status = $5, \
         attempt = $6, started_at = $7, ended_at = $8, exit_code = $9, reason = $10, \
         prompt_path = $11, output_path = $12, head_before = $13, head_after = $14, \
         agent_pid = $15, agent_start_time = $16, usage = $17, resources = $18 \
         WHERE id = $19",
        args,
    )
    .execute(&mut *conn)
    .await
    .map_err(map_pg)?;
    if result.rows_affected() == 0 {
        return Err(StoreError::step_not_found(step.id));
    }
    Ok(())
}

pub(crate) async fn get_step(conn: &mut PgConnection, id: StepId) -> Result<Step, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_pg)?;
    match row {
        Some(row) => step_from_row(&row),
        None => Err(StoreError::step_not_found(id)),
    }
}

pub(crate) async fn list_steps(
    conn: &mut PgConnection,
    run_id: RunId,
) -> Result<Vec<Step>, StoreError> {
    ensure_exists(conn, run_id).await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps WHERE run_id = $1 ORDER BY seq"
    ))
    .bind(run_id.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_pg)?;
    rows.iter().map(step_from_row).collect()
}

/// Appends `events`, all of run `run_id`, inside the caller's transaction: the run's counter
/// row moves by `events.len()` (taking its row lock until the transaction ends, which is what
/// keeps numbers gap-free and in commit order under concurrent writers on any host), then the
/// events go in with the numbers before it, in order, as one statement. On an error nothing
/// of the group is kept once the transaction rolls back.
pub(crate) async fn append_events(
    conn: &mut PgConnection,
    run_id: RunId,
    events: &[&NewEvent],
) -> Result<Vec<Event>, StoreError> {
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let counted = sqlx::query_scalar::<_, i64>(
        "INSERT INTO event_counters (run_id, last_seq) VALUES ($1, $2) \
         ON CONFLICT (run_id) DO UPDATE SET last_seq = event_counters.last_seq + EXCLUDED.last_seq \
         RETURNING last_seq",
    )
    .bind(run_id.to_string())
    .bind(n)
    .fetch_one(&mut *conn)
    .await;
    let last = match counted {
        Ok(last) => last,
        Err(e) if violates(&e, "event_counters_run_id_fkey") => {
            return Err(StoreError::run_not_found(run_id));
        }
        Err(e) => return Err(map_pg(e)),
    };
    if let Some(step_id) = first_unknown_step(conn, events).await? {
        return Err(StoreError::step_not_found(step_id));
    }
    let first = last - n + 1;
    let mut step_ids = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut tss = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for event in events {
        step_ids.push(event.step_id.map(|id| id.to_string()));
        kinds.push(event.kind.as_str().to_owned());
        tss.push(event.ts);
        payloads.push(json_text(&event.payload, "event.payload")?);
    }
    let inserted = sqlx::query(
        "INSERT INTO events (run_id, seq, step_id, kind, ts, payload) \
         SELECT $1, $2 + t.ord - 1, t.step_id, t.kind, t.ts, t.payload \
         FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::text[]) \
              WITH ORDINALITY AS t(step_id, kind, ts, payload, ord)",
    )
    .bind(run_id.to_string())
    .bind(first)
    .bind(&step_ids)
    .bind(&kinds)
    .bind(&tss)
    .bind(&payloads)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) => return Err(map_pg(e)),
    }
    events
        .iter()
        .zip(first..)
        .map(|(event, seq)| {
            Ok(Event {
                seq: u64::try_from(seq)
                    .map_err(|e| crate::error::SqliteStoreError::corrupt("events.seq", e))?,
                run_id: event.run_id,
                step_id: event.step_id,
                kind: event.kind,
                ts: event.ts,
                payload: event.payload.clone(),
            })
        })
        .collect()
}

/// The step of the first event in `events` that names a step not in the table, checked
/// before the insert (a failed statement would end the transaction; steps are never deleted,
/// so what this sees stays true until the insert).
async fn first_unknown_step(
    conn: &mut PgConnection,
    events: &[&NewEvent],
) -> Result<Option<StepId>, StoreError> {
    let named: Vec<String> = events
        .iter()
        .filter_map(|e| e.step_id.map(|id| id.to_string()))
        .collect();
    if named.is_empty() {
        return Ok(None);
    }
    let missing: Option<String> = sqlx::query_scalar(
        "SELECT s.id FROM UNNEST($1::text[]) WITH ORDINALITY AS s(id, ord) \
         WHERE NOT EXISTS (SELECT 1 FROM steps WHERE steps.id = s.id) ORDER BY s.ord LIMIT 1",
    )
    .bind(&named)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_pg)?;
    missing
        .map(|id| {
            id.parse()
                .map_err(|e| crate::error::SqliteStoreError::corrupt("events.step_id", e))
        })
        .transpose()
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        seq: columns::int(row, "events.seq")?,
        run_id: columns::parse(row, "events.run_id")?,
        step_id: columns::parse_opt(row, "events.step_id")?,
        kind: columns::parse(row, "events.kind")?,
        ts: columns::get(row, "events.ts")?,
        payload: columns::json(row, "events.payload")?,
    })
}

pub(crate) async fn events_after(
    conn: &mut PgConnection,
    run_id: RunId,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    ensure_exists(conn, run_id).await?;
    let after_seq = int_value(after_seq, "after_seq").unwrap_or(i64::MAX);
    let rows = sqlx::query(
        "SELECT run_id, seq, step_id, kind, ts, payload FROM events \
         WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id.to_string())
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_pg)?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn last_event_seq(
    conn: &mut PgConnection,
    run_id: RunId,
) -> Result<u64, StoreError> {
    let row: Option<Option<i64>> = sqlx::query_scalar(
        "SELECT (SELECT c.last_seq FROM event_counters AS c WHERE c.run_id = r.id) \
         FROM runs AS r WHERE r.id = $1",
    )
    .bind(run_id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_pg)?;
    match row {
        None => Err(StoreError::run_not_found(run_id)),
        Some(seq) => u64::try_from(seq.unwrap_or(0))
            .map_err(|e| crate::error::SqliteStoreError::corrupt("event_counters.last_seq", e)),
    }
}

fn artifact_from_row(row: &PgRow) -> Result<Artifact, StoreError> {
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

pub(crate) async fn record_artifact(
    conn: &mut PgConnection,
    artifact: &NewArtifact,
) -> Result<Artifact, StoreError> {
    let result = sqlx::query(
        "INSERT INTO artifacts (run_id, kind, location, path, checksum, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (run_id, location, path) DO UPDATE SET \
             kind = EXCLUDED.kind, checksum = EXCLUDED.checksum, \
             recorded_at = EXCLUDED.recorded_at \
         RETURNING id, run_id, kind, location, path, checksum, recorded_at",
    )
    .bind(artifact.run_id.to_string())
    .bind(artifact.kind.as_str())
    .bind(artifact.location.as_str())
    .bind(path_text(&artifact.path, "artifact.path")?.to_owned())
    .bind(&artifact.checksum)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await;
    match result {
        Ok(row) => artifact_from_row(&row),
        Err(e) if violates(&e, "artifacts_run_id_fkey") => {
            Err(StoreError::run_not_found(artifact.run_id))
        }
        Err(e) => Err(map_pg(e)),
    }
}

pub(crate) async fn list_artifacts(
    conn: &mut PgConnection,
    run_id: RunId,
) -> Result<Vec<Artifact>, StoreError> {
    ensure_exists(conn, run_id).await?;
    let rows = sqlx::query(
        "SELECT id, run_id, kind, location, path, checksum, recorded_at FROM artifacts \
         WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(map_pg)?;
    rows.iter().map(artifact_from_row).collect()
}
