//! The `steps` table: inserting, updating and reading the steps of a run.

use loop_engine::backend::StoreError;
use loop_engine::domain::{RunId, Step, StepId};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};

use crate::columns::{self, add_arg, int_value, json_text, path_text_opt};
use crate::error::{is_foreign_key_violation, map_sqlx};
use crate::runs;

macro_rules! step_columns {
    () => {
        "id, run_id, seq, iteration, label, phase, status, attempt, started_at, ended_at, \
         exit_code, reason, prompt_path, output_path, head_before, head_after, agent_pid, \
         agent_start_time, usage, resources"
    };
}

fn step_from_row(row: &SqliteRow) -> Result<Step, StoreError> {
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

/// The values of every column except `id` and `run_id`, in this order: seq, iteration,
/// label, phase, status, attempt, started_at, ended_at, exit_code, reason, prompt_path,
/// output_path, head_before, head_after, agent_pid, agent_start_time, usage, resources.
fn add_columns(args: &mut SqliteArguments, step: &Step) -> Result<(), StoreError> {
    add_arg(args, i64::from(step.seq))?;
    add_arg(args, i64::from(step.iteration))?;
    add_arg(args, step.label.clone())?;
    add_arg(args, step.phase.as_str())?;
    add_arg(args, step.status.as_str())?;
    add_arg(args, i64::from(step.attempt))?;
    add_arg(args, step.started_at)?;
    add_arg(args, step.ended_at)?;
    add_arg(args, step.exit_code.map(i64::from))?;
    add_arg(args, step.reason.clone())?;
    add_arg(
        args,
        path_text_opt(step.prompt_path.as_deref(), "step.prompt_path")?.map(str::to_owned),
    )?;
    add_arg(
        args,
        path_text_opt(step.output_path.as_deref(), "step.output_path")?.map(str::to_owned),
    )?;
    add_arg(args, step.head_before.clone())?;
    add_arg(args, step.head_after.clone())?;
    add_arg(args, step.agent_pid.map(i64::from))?;
    let start_time = step
        .agent_start_time
        .map(|t| int_value(t, "step.agent_start_time"))
        .transpose()?;
    add_arg(args, start_time)?;
    let usage = step
        .usage
        .as_ref()
        .map(|u| json_text(u, "step.usage"))
        .transpose()?;
    add_arg(args, usage)?;
    let resources = step
        .resources
        .as_ref()
        .map(|r| json_text(r, "step.resources"))
        .transpose()?;
    add_arg(args, resources)?;
    Ok(())
}

pub(crate) async fn insert(conn: &mut SqliteConnection, step: &Step) -> Result<(), StoreError> {
    let mut args = SqliteArguments::default();
    add_columns(&mut args, step)?;
    add_arg(&mut args, step.id.to_string())?;
    add_arg(&mut args, step.run_id.to_string())?;
    let result = sqlx::query_with(
        "INSERT INTO steps (seq, iteration, label, phase, status, attempt, started_at, \
         ended_at, exit_code, reason, prompt_path, output_path, head_before, head_after, \
         agent_pid, agent_start_time, usage, resources, id, run_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        args,
    )
    .execute(&mut *conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        // The only parent of a step is its run.
        Err(e) if is_foreign_key_violation(&e) => Err(StoreError::run_not_found(step.run_id)),
        Err(e) => Err(map_sqlx(e)),
    }
}

pub(crate) async fn update(conn: &mut SqliteConnection, step: &Step) -> Result<(), StoreError> {
    let mut args = SqliteArguments::default();
    add_columns(&mut args, step)?;
    add_arg(&mut args, step.id.to_string())?;
    // A step never moves to another run: `run_id` is not updated.
    let result = sqlx::query_with(
        "UPDATE steps SET seq = ?, iteration = ?, label = ?, phase = ?, status = ?, \
         attempt = ?, started_at = ?, ended_at = ?, exit_code = ?, reason = ?, \
         prompt_path = ?, output_path = ?, head_before = ?, head_after = ?, agent_pid = ?, \
         agent_start_time = ?, usage = ?, resources = ? \
         WHERE id = ?",
        args,
    )
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if result.rows_affected() == 0 {
        return Err(StoreError::step_not_found(step.id));
    }
    Ok(())
}

pub(crate) async fn get(reader: &SqlitePool, id: StepId) -> Result<Step, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps WHERE id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(reader)
    .await
    .map_err(map_sqlx)?;
    match row {
        Some(row) => step_from_row(&row),
        None => Err(StoreError::step_not_found(id)),
    }
}

pub(crate) async fn list(reader: &SqlitePool, run_id: RunId) -> Result<Vec<Step>, StoreError> {
    runs::ensure_exists(reader, run_id).await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        step_columns!(),
        " FROM steps WHERE run_id = ? ORDER BY seq"
    ))
    .bind(run_id.to_string())
    .fetch_all(reader)
    .await
    .map_err(map_sqlx)?;
    rows.iter().map(step_from_row).collect()
}
