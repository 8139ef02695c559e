//! The `runs` table: creating, reading, listing and updating runs, and the claim/lease
//! protocol that hands runs to workers.

use loop_engine::backend::{ClaimRequest, QueueOrder, RunFilter, StoreError};
use loop_engine::domain::{Run, RunId, RunStatus, now_ms};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};

use crate::columns::{self, add_arg, int_value, json_text, path_text};
use crate::error::map_sqlx;

/// The columns of a run, in the order [`run_from_row`] reads them by name.
macro_rules! run_columns {
    () => {
        "id, name, name_source, status, exit_reason, failure, workspace_root, spec_path, \
         plan_path, base_branch, run_branch, merge_target_branch, merge_strategy, \
         worktree_path, config, iterations_run, tasks_done, tasks_total, created_at, \
         updated_at, worker_id, lease_expires_at, review_status, review_action_at, \
         merge_commit, pr_url, lease_epoch"
    };
}

/// Decodes a row selected with [`run_columns!`].
pub(crate) fn run_from_row(row: &SqliteRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: columns::parse(row, "runs.id")?,
        name: columns::get(row, "runs.name")?,
        name_source: columns::parse(row, "runs.name_source")?,
        status: columns::parse(row, "runs.status")?,
        exit_reason: columns::parse_opt(row, "runs.exit_reason")?,
        failure: columns::get(row, "runs.failure")?,
        workspace_root: columns::path(row, "runs.workspace_root")?,
        spec_path: columns::path(row, "runs.spec_path")?,
        plan_path: columns::path(row, "runs.plan_path")?,
        base_branch: columns::get(row, "runs.base_branch")?,
        run_branch: columns::get(row, "runs.run_branch")?,
        merge_target_branch: columns::get(row, "runs.merge_target_branch")?,
        merge_strategy: columns::parse(row, "runs.merge_strategy")?,
        worktree_path: columns::path(row, "runs.worktree_path")?,
        config: columns::json(row, "runs.config")?,
        iterations_run: columns::int(row, "runs.iterations_run")?,
        tasks_done: columns::int(row, "runs.tasks_done")?,
        tasks_total: columns::int(row, "runs.tasks_total")?,
        created_at: columns::get(row, "runs.created_at")?,
        updated_at: columns::get(row, "runs.updated_at")?,
        worker_id: columns::get(row, "runs.worker_id")?,
        lease_expires_at: columns::get(row, "runs.lease_expires_at")?,
        lease_epoch: columns::int(row, "runs.lease_epoch")?,
        review_status: columns::parse(row, "runs.review_status")?,
        review_action_at: columns::get(row, "runs.review_action_at")?,
        merge_commit: columns::get(row, "runs.merge_commit")?,
        pr_url: columns::get(row, "runs.pr_url")?,
    })
}

/// The values of the run columns that `update_run` replaces, in this order: name,
/// name_source, status, exit_reason, failure, workspace_root, spec_path, plan_path,
/// base_branch, run_branch, merge_target_branch, merge_strategy, worktree_path, config,
/// iterations_run, tasks_done, tasks_total, review_status, review_action_at, merge_commit,
/// pr_url.
fn add_mutable_columns(args: &mut SqliteArguments, run: &Run) -> Result<(), StoreError> {
    add_arg(args, run.name.clone())?;
    add_arg(args, run.name_source.as_str())?;
    add_arg(args, run.status.as_str())?;
    add_arg(args, run.exit_reason.as_ref().map(ToString::to_string))?;
    add_arg(args, run.failure.clone())?;
    add_arg(
        args,
        path_text(&run.workspace_root, "run.workspace_root")?.to_owned(),
    )?;
    add_arg(args, path_text(&run.spec_path, "run.spec_path")?.to_owned())?;
    add_arg(args, path_text(&run.plan_path, "run.plan_path")?.to_owned())?;
    add_arg(args, run.base_branch.clone())?;
    add_arg(args, run.run_branch.clone())?;
    add_arg(args, run.merge_target_branch.clone())?;
    add_arg(args, run.merge_strategy.as_str())?;
    add_arg(
        args,
        path_text(&run.worktree_path, "run.worktree_path")?.to_owned(),
    )?;
    add_arg(args, json_text(&run.config, "run.config")?)?;
    add_arg(args, i64::from(run.iterations_run))?;
    add_arg(args, i64::from(run.tasks_done))?;
    add_arg(args, i64::from(run.tasks_total))?;
    add_arg(args, run.review_status.as_str())?;
    add_arg(args, run.review_action_at)?;
    add_arg(args, run.merge_commit.clone())?;
    add_arg(args, run.pr_url.clone())?;
    Ok(())
}

pub(crate) async fn create(writer: &SqlitePool, run: &Run) -> Result<(), StoreError> {
    let mut args = SqliteArguments::default();
    add_mutable_columns(&mut args, run)?;
    add_arg(&mut args, run.created_at)?;
    add_arg(&mut args, run.updated_at)?;
    add_arg(&mut args, run.worker_id.clone())?;
    add_arg(&mut args, run.lease_expires_at)?;
    add_arg(&mut args, int_value(run.lease_epoch, "run.lease_epoch")?)?;
    add_arg(&mut args, run.id.to_string())?;
    let result = sqlx::query_with(
        "INSERT INTO runs (name, name_source, status, exit_reason, failure, workspace_root, \
         spec_path, plan_path, base_branch, run_branch, merge_target_branch, merge_strategy, \
         worktree_path, config, iterations_run, tasks_done, tasks_total, review_status, \
         review_action_at, merge_commit, pr_url, created_at, updated_at, worker_id, \
         lease_expires_at, lease_epoch, id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        args,
    )
    .execute(writer)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => match map_sqlx(e) {
            StoreError::Conflict { .. } => Err(StoreError::Conflict {
                detail: format!("run {} already exists", run.id),
            }),
            other => Err(other),
        },
    }
}

pub(crate) async fn get(reader: &SqlitePool, id: RunId) -> Result<Run, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ?"
    ))
    .bind(id.to_string())
    .fetch_optional(reader)
    .await
    .map_err(map_sqlx)?;
    match row {
        Some(row) => run_from_row(&row),
        None => Err(StoreError::run_not_found(id)),
    }
}

/// True when the run exists.
pub(crate) async fn exists(pool: &SqlitePool, id: RunId) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?)")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)
}

/// `NotFound` unless the run exists.
pub(crate) async fn ensure_exists(pool: &SqlitePool, id: RunId) -> Result<(), StoreError> {
    if exists(pool, id).await? {
        Ok(())
    } else {
        Err(StoreError::run_not_found(id))
    }
}

pub(crate) async fn list(reader: &SqlitePool, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
    let mut sql = String::from(concat!("SELECT ", run_columns!(), " FROM runs WHERE 1 = 1"));
    let mut args = SqliteArguments::default();
    if let Some(workspace) = &filter.workspace_root {
        sql.push_str(" AND workspace_root = ?");
        add_arg(
            &mut args,
            path_text(workspace, "filter.workspace_root")?.to_owned(),
        )?;
    }
    if !filter.statuses.is_empty() {
        // One placeholder per status (not a JSON list) so SQLite can use the status index.
        let placeholders = vec!["?"; filter.statuses.len()].join(", ");
        sql.push_str(&format!(" AND status IN ({placeholders})"));
        for status in &filter.statuses {
            add_arg(&mut args, status.as_str())?;
        }
    }
    if let Some(before) = filter.before {
        let created_at: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM runs WHERE id = ?")
                .bind(before.to_string())
                .fetch_optional(reader)
                .await
                .map_err(map_sqlx)?;
        let created_at = created_at.ok_or_else(|| StoreError::run_not_found(before))?;
        sql.push_str(" AND (created_at, id) < (?, ?)");
        add_arg(&mut args, created_at)?;
        add_arg(&mut args, before.to_string())?;
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(" LIMIT ?");
        add_arg(&mut args, i64::from(limit))?;
    }
    // The text is assembled from the fixed fragments above only; every value is a bound
    // parameter.
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(reader)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(run_from_row).collect()
}

pub(crate) async fn update(conn: &mut SqliteConnection, run: &Run) -> Result<(), StoreError> {
    let mut args = SqliteArguments::default();
    add_mutable_columns(&mut args, run)?;
    add_arg(&mut args, now_ms())?;
    add_arg(&mut args, run.id.to_string())?;
    // The lease columns and the creation time are left alone (see `Store::update_run`).
    let result = sqlx::query_with(
        "UPDATE runs SET name = ?, name_source = ?, status = ?, exit_reason = ?, failure = ?, \
         workspace_root = ?, spec_path = ?, plan_path = ?, base_branch = ?, run_branch = ?, \
         merge_target_branch = ?, merge_strategy = ?, worktree_path = ?, config = ?, \
         iterations_run = ?, tasks_done = ?, tasks_total = ?, review_status = ?, \
         review_action_at = ?, merge_commit = ?, pr_url = ?, updated_at = ? \
         WHERE id = ?",
        args,
    )
    .execute(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    if result.rows_affected() == 0 {
        return Err(StoreError::run_not_found(run.id));
    }
    Ok(())
}

/// The claim queue. A run is claimable when it is `PENDING`, or `RUNNING` without a live
/// lease (expired, or released by its worker). The `status IN (...)` term matches the partial
/// index `runs_claimable`, which is walked in creation order (either direction) and stops at
/// the first run that qualifies, however long the backlog; `INDEXED BY` keeps the planner
/// from preferring a status index plus a sort of every queued run.
macro_rules! claim_query {
    ($order:literal) => {
        concat!(
            "SELECT id FROM runs INDEXED BY runs_claimable \
             WHERE status IN ('PENDING', 'RUNNING') \
               AND (status = 'PENDING' OR lease_expires_at IS NULL OR lease_expires_at <= ?1) \
               AND workspace_root NOT IN (SELECT value FROM json_each(?2)) \
               AND id NOT IN (SELECT value FROM json_each(?3)) \
             ORDER BY ",
            $order,
            " LIMIT 1"
        )
    };
}

pub(crate) async fn claim_next(
    writer: &SqlitePool,
    req: &ClaimRequest,
) -> Result<Option<Run>, StoreError> {
    let skip_workspaces = req
        .skip_workspaces
        .iter()
        .map(|w| path_text(w, "claim.skip_workspaces"))
        .collect::<Result<Vec<_>, _>>()?;
    let skip_workspaces = json_text(&skip_workspaces, "claim.skip_workspaces")?;
    let skip_runs: Vec<String> = req.skip_runs.iter().map(ToString::to_string).collect();
    let skip_runs = json_text(&skip_runs, "claim.skip_runs")?;
    let query = match req.order {
        QueueOrder::Fifo => claim_query!("created_at ASC, id ASC"),
        QueueOrder::NewestFirst => claim_query!("created_at DESC, id DESC"),
    };

    // Choosing and marking must be one atomic step: BEGIN IMMEDIATE takes the write lock
    // before the SELECT (waiting under busy_timeout), so no other connection or process can
    // claim the same run between the two statements. A deferred BEGIN would read first and
    // then fail to upgrade to a writer without waiting.
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(map_sqlx)?;
    let chosen: Option<String> = sqlx::query_scalar(query)
        .bind(req.now)
        .bind(skip_workspaces)
        .bind(skip_runs)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let Some(id) = chosen else {
        // Nothing was written; dropping the transaction rolls it back.
        return Ok(None);
    };
    let row = sqlx::query(concat!(
        "UPDATE runs SET status = 'RUNNING', worker_id = ?, lease_expires_at = ?, updated_at = ?, \
         lease_epoch = lease_epoch + 1 WHERE id = ? RETURNING ",
        run_columns!()
    ))
    .bind(&req.worker_id)
    .bind(req.now.saturating_add(req.lease_ms))
    .bind(req.now)
    .bind(&id)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let run = run_from_row(&row)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(Some(run))
}

pub(crate) async fn renew_lease(
    writer: &SqlitePool,
    run_id: RunId,
    worker_id: &str,
    until: i64,
) -> Result<(), StoreError> {
    let result = sqlx::query("UPDATE runs SET lease_expires_at = ? WHERE id = ? AND worker_id = ?")
        .bind(until)
        .bind(run_id.to_string())
        .bind(worker_id)
        .execute(writer)
        .await
        .map_err(map_sqlx)?;
    if result.rows_affected() == 1 {
        return Ok(());
    }
    // Runs are never deleted, so a run that exists now existed during the update: the worker
    // simply does not hold it.
    ensure_exists(writer, run_id).await?;
    Err(StoreError::Conflict {
        detail: format!("run {run_id} is not held by worker {worker_id}"),
    })
}

pub(crate) async fn release(
    writer: &SqlitePool,
    run_id: RunId,
    worker_id: &str,
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "UPDATE runs SET worker_id = NULL, lease_expires_at = NULL \
         WHERE id = ? AND worker_id = ?",
    )
    .bind(run_id.to_string())
    .bind(worker_id)
    .execute(writer)
    .await
    .map_err(map_sqlx)?;
    if result.rows_affected() == 0 {
        ensure_exists(writer, run_id).await?;
    }
    Ok(())
}

/// Fencing inside a batch's transaction: `Conflict` unless the run's lease epoch is still
/// `epoch`, `NotFound` for an unknown run.
pub(crate) async fn fence(
    conn: &mut SqliteConnection,
    run_id: RunId,
    epoch: u64,
) -> Result<(), StoreError> {
    let current: Option<i64> = sqlx::query_scalar("SELECT lease_epoch FROM runs WHERE id = ?")
        .bind(run_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    let Some(current) = current else {
        return Err(StoreError::run_not_found(run_id));
    };
    let current = u64::try_from(current)
        .map_err(|e| crate::error::SqliteStoreError::corrupt("runs.lease_epoch", e))?;
    if current == epoch {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            detail: loop_engine::backend::fence_detail(run_id, epoch, current),
        })
    }
}

pub(crate) async fn count_by_status(
    reader: &SqlitePool,
) -> Result<Vec<(RunStatus, u64)>, StoreError> {
    let rows =
        sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status ORDER BY status")
            .fetch_all(reader)
            .await
            .map_err(map_sqlx)?;
    rows.iter()
        .map(|row| {
            let status = columns::parse(row, "runs.status")?;
            let n: u64 = columns::int(row, "n")?;
            Ok((status, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn claim_queries_differ_only_in_order() {
        let fifo = claim_query!("created_at ASC, id ASC");
        let newest = claim_query!("created_at DESC, id DESC");
        assert!(fifo.ends_with("ORDER BY created_at ASC, id ASC LIMIT 1"));
        assert!(newest.ends_with("ORDER BY created_at DESC, id DESC LIMIT 1"));
        assert_eq!(
            fifo.replace("ASC", "DESC"),
            newest,
            "the two claim queries must select the same runs"
        );
    }
}
