//! The `runs` table on PostgreSQL: creating, reading, listing and updating runs, the claim
//! queue (`FOR UPDATE SKIP LOCKED`), leases and fencing.

use loop_engine::backend::{ClaimRequest, QueueOrder, RunFilter, StoreError, fence_detail};
use loop_engine::domain::{Run, RunId, RunStatus, now_ms};
use sqlx::postgres::{PgArguments, PgConnection, PgRow};
use sqlx::{Arguments, PgPool};

use super::columns;
use super::error::map_pg;
use crate::columns::{int_value, json_text, path_text};

/// The columns of a run, in the order [`run_from_row`] reads them by name.
macro_rules! run_columns {
    () => {
        "id, name, name_source, status, exit_reason, failure, workspace_root, spec_path, \
         plan_path, base_branch, run_branch, merge_target_branch, merge_strategy, \
         worktree_path, config, iterations_run, tasks_done, tasks_total, created_at, \
         updated_at, worker_id, lease_expires_at, lease_epoch, review_status, \
         review_action_at, merge_commit, pr_url"
    };
}

/// Decodes a row selected with [`run_columns!`].
pub(crate) fn run_from_row(row: &PgRow) -> Result<Run, StoreError> {
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

/// Appends one bound value to `args`.
pub(crate) fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + 'q,
{
    args.add(value).map_err(|e| map_pg(sqlx::Error::Encode(e)))
}

/// The values of the columns `update_run` replaces ($1..$21), in the order of
/// [`MUTABLE_SET`].
fn add_mutable_columns(args: &mut PgArguments, run: &Run) -> Result<(), StoreError> {
    add(args, run.name.clone())?;
    add(args, run.name_source.as_str())?;
    add(args, run.status.as_str())?;
    add(args, run.exit_reason.as_ref().map(ToString::to_string))?;
    add(args, run.failure.clone())?;
    add(
        args,
        path_text(&run.workspace_root, "run.workspace_root")?.to_owned(),
    )?;
    add(args, path_text(&run.spec_path, "run.spec_path")?.to_owned())?;
    add(args, path_text(&run.plan_path, "run.plan_path")?.to_owned())?;
    add(args, run.base_branch.clone())?;
    add(args, run.run_branch.clone())?;
    add(args, run.merge_target_branch.clone())?;
    add(args, run.merge_strategy.as_str())?;
    add(
        args,
        path_text(&run.worktree_path, "run.worktree_path")?.to_owned(),
    )?;
    add(args, json_text(&run.config, "run.config")?)?;
    add(args, i64::from(run.iterations_run))?;
    add(args, i64::from(run.tasks_done))?;
    add(args, i64::from(run.tasks_total))?;
    add(args, run.review_status.as_str())?;
    add(args, run.review_action_at)?;
    add(args, run.merge_commit.clone())?;
    add(args, run.pr_url.clone())?;
    Ok(())
}

pub(crate) async fn create(pool: &PgPool, run: &Run) -> Result<(), StoreError> {
    let mut args = PgArguments::default();
    add_mutable_columns(&mut args, run)?;
    add(&mut args, run.created_at)?;
    add(&mut args, run.updated_at)?;
    add(&mut args, run.worker_id.clone())?;
    add(&mut args, run.lease_expires_at)?;
    add(&mut args, int_value(run.lease_epoch, "run.lease_epoch")?)?;
    add(&mut args, run.id.to_string())?;
    let result = sqlx::query_with(
        "INSERT INTO runs (name, name_source, status, exit_reason, failure, workspace_root, \
         spec_path, plan_path, base_branch, run_branch, merge_target_branch, merge_strategy, \
         worktree_path, config, iterations_run, tasks_done, tasks_total, review_status, \
         review_action_at, merge_commit, pr_url, created_at, updated_at, worker_id, \
         lease_expires_at, lease_epoch, id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)",
        args,
    )
    .execute(pool)
    .await;
    match result.map_err(map_pg) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(StoreError::Conflict {
            detail: format!("run {} already exists", run.id),
        }),
        Err(other) => Err(other),
    }
}

pub(crate) async fn get(conn: &mut PgConnection, id: RunId) -> Result<Run, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_pg)?;
    match row {
        Some(row) => run_from_row(&row),
        None => Err(StoreError::run_not_found(id)),
    }
}

/// `NotFound` unless the run exists.
pub(crate) async fn ensure_exists(conn: &mut PgConnection, id: RunId) -> Result<(), StoreError> {
    let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1)")
        .bind(id.to_string())
        .fetch_one(&mut *conn)
        .await
        .map_err(map_pg)?;
    if found {
        Ok(())
    } else {
        Err(StoreError::run_not_found(id))
    }
}

pub(crate) async fn list(pool: &PgPool, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
    let mut sql = String::from(concat!("SELECT ", run_columns!(), " FROM runs WHERE TRUE"));
    let mut args = PgArguments::default();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if let Some(workspace) = &filter.workspace_root {
        sql.push_str(&format!(" AND workspace_root = {}", next()));
        add(
            &mut args,
            path_text(workspace, "filter.workspace_root")?.to_owned(),
        )?;
    }
    if !filter.statuses.is_empty() {
        sql.push_str(&format!(" AND status = ANY({})", next()));
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        add(&mut args, statuses)?;
    }
    if let Some(before) = filter.before {
        let created_at: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM runs WHERE id = $1")
                .bind(before.to_string())
                .fetch_optional(pool)
                .await
                .map_err(map_pg)?;
        let created_at = created_at.ok_or_else(|| StoreError::run_not_found(before))?;
        let (a, b) = (next(), next());
        sql.push_str(&format!(" AND (created_at, id) < ({a}, {b})"));
        add(&mut args, created_at)?;
        add(&mut args, before.to_string())?;
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {}", next()));
        add(&mut args, i64::from(limit))?;
    }
    // The text is assembled from the fixed fragments above; every value is a bound parameter.
    let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(pool)
        .await
        .map_err(map_pg)?;
    rows.iter().map(run_from_row).collect()
}

pub(crate) async fn update(conn: &mut PgConnection, run: &Run) -> Result<(), StoreError> {
    let mut args = PgArguments::default();
    add_mutable_columns(&mut args, run)?;
    add(&mut args, now_ms())?;
    add(&mut args, run.id.to_string())?;
    // The lease columns and the creation time are left alone (see `Store::update_run`).
    let result = sqlx::query_with(
        "UPDATE runs SET name = $1, name_source = $2, status = $3, exit_reason = $4, \
         failure = $5, workspace_root = $6, spec_path = $7, plan_path = $8, base_branch = $9, \
         run_branch = $10, merge_target_branch = $11, merge_strategy = $12, \
         worktree_path = $13, config = $14, iterations_run = $15, tasks_done = $16, \
         tasks_total = $17, review_status = $18, review_action_at = $19, merge_commit = $20, \
         pr_url = $21, updated_at = $22 WHERE id = $23",
        args,
    )
    .execute(&mut *conn)
    .await
    .map_err(map_pg)?;
    if result.rows_affected() == 0 {
        return Err(StoreError::run_not_found(run.id));
    }
    Ok(())
}

/// The claim queue: the first claimable run in queue order that no other transaction holds
/// locked (`SKIP LOCKED`: concurrent claimers on any host pass over each other's candidates
/// instead of waiting for them). A run is claimable when it is `PENDING`, or `RUNNING`
/// without a live lease (expired, or released by its worker). A run whose workspace is at its
/// `max_runs_per_workspace` across all hosts is passed over ([`over_workspace_cap`]).
macro_rules! claim_query {
    ($order:literal) => {
        concat!(
            "SELECT id, workspace_root, config FROM runs \
             WHERE status IN ('PENDING', 'RUNNING') \
               AND (status = 'PENDING' OR lease_expires_at IS NULL OR lease_expires_at <= $1) \
               AND NOT (workspace_root = ANY($2)) \
               AND NOT (id = ANY($3)) \
             ORDER BY ",
            $order,
            " LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
    };
}

pub(crate) async fn claim_next(
    pool: &PgPool,
    req: &ClaimRequest,
) -> Result<Option<Run>, StoreError> {
    let mut skip_workspaces = req
        .skip_workspaces
        .iter()
        .map(|w| path_text(w, "claim.skip_workspaces").map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let skip_runs: Vec<String> = req.skip_runs.iter().map(ToString::to_string).collect();
    let query = match req.order {
        QueueOrder::Fifo => claim_query!("created_at ASC, id ASC"),
        QueueOrder::NewestFirst => claim_query!("created_at DESC, id DESC"),
    };
    loop {
        let mut tx = pool.begin().await.map_err(map_pg)?;
        let chosen: Option<(String, String, String)> = sqlx::query_as(query)
            .bind(req.now)
            .bind(&skip_workspaces)
            .bind(&skip_runs)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?;
        let Some((id, workspace, config)) = chosen else {
            return Ok(None);
        };
        if over_workspace_cap(&mut tx, &id, &workspace, &config, req.now).await? {
            // Nothing was written; the workspace's other runs wait for a free place too.
            drop(tx);
            skip_workspaces.push(workspace);
            continue;
        }
        let row = sqlx::query(concat!(
            "UPDATE runs SET status = 'RUNNING', worker_id = $1, lease_expires_at = $2, \
             updated_at = $3, lease_epoch = lease_epoch + 1 WHERE id = $4 RETURNING ",
            run_columns!()
        ))
        .bind(&req.worker_id)
        .bind(req.now.saturating_add(req.lease_ms))
        .bind(req.now)
        .bind(&id)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_pg)?;
        let run = run_from_row(&row)?;
        tx.commit().await.map_err(map_pg)?;
        return Ok(Some(run));
    }
}

/// True when the chosen run's own `max_runs_per_workspace` (SPEC §8) is reached by the runs
/// of its workspace that execute under a live lease on any host. The workspace's claims are
/// serialised by a transaction-scoped advisory lock taken before counting, so two hosts
/// claiming in one workspace at once cannot both see a free place: the second one counts
/// after the first committed.
async fn over_workspace_cap(
    conn: &mut PgConnection,
    id: &str,
    workspace: &str,
    config: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let cap = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|c| {
            c.get("max_runs_per_workspace")
                .and_then(serde_json::Value::as_i64)
        });
    let Some(cap) = cap else {
        return Ok(false);
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 16))")
        .bind(workspace)
        .execute(&mut *conn)
        .await
        .map_err(map_pg)?;
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM runs WHERE workspace_root = $1 AND status = 'RUNNING' \
         AND worker_id IS NOT NULL AND lease_expires_at > $2 AND id <> $3",
    )
    .bind(workspace)
    .bind(now)
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_pg)?;
    Ok(running >= cap)
}

pub(crate) async fn renew_lease(
    pool: &PgPool,
    run_id: RunId,
    worker_id: &str,
    until: i64,
) -> Result<(), StoreError> {
    let result =
        sqlx::query("UPDATE runs SET lease_expires_at = $1 WHERE id = $2 AND worker_id = $3")
            .bind(until)
            .bind(run_id.to_string())
            .bind(worker_id)
            .execute(pool)
            .await
            .map_err(map_pg)?;
    if result.rows_affected() == 1 {
        return Ok(());
    }
    let mut conn = pool.acquire().await.map_err(map_pg)?;
    ensure_exists(&mut conn, run_id).await?;
    Err(StoreError::Conflict {
        detail: format!("run {run_id} is not held by worker {worker_id}"),
    })
}

pub(crate) async fn release(
    pool: &PgPool,
    run_id: RunId,
    worker_id: &str,
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "UPDATE runs SET worker_id = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND worker_id = $2",
    )
    .bind(run_id.to_string())
    .bind(worker_id)
    .execute(pool)
    .await
    .map_err(map_pg)?;
    if result.rows_affected() == 0 {
        let mut conn = pool.acquire().await.map_err(map_pg)?;
        ensure_exists(&mut conn, run_id).await?;
    }
    Ok(())
}

/// Fencing inside a batch's transaction: `Conflict` unless the run's lease epoch is still
/// `epoch`. The row stays locked (`FOR NO KEY UPDATE`) until the batch commits, so a claim
/// cannot move the epoch between this check and the batch's writes (the claim skips or
/// waits for the locked row), while event appends' foreign-key checks are not blocked.
pub(crate) async fn fence(
    conn: &mut PgConnection,
    run_id: RunId,
    epoch: u64,
) -> Result<(), StoreError> {
    let current: Option<i64> =
        sqlx::query_scalar("SELECT lease_epoch FROM runs WHERE id = $1 FOR NO KEY UPDATE")
            .bind(run_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_pg)?;
    let Some(current) = current else {
        return Err(StoreError::run_not_found(run_id));
    };
    let current = u64::try_from(current)
        .map_err(|e| crate::error::SqliteStoreError::corrupt("runs.lease_epoch", e))?;
    if current == epoch {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            detail: fence_detail(run_id, epoch, current),
        })
    }
}

pub(crate) async fn count_by_status(pool: &PgPool) -> Result<Vec<(RunStatus, u64)>, StoreError> {
    let rows =
        sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await
            .map_err(map_pg)?;
    rows.iter()
        .map(|row| {
            let status = columns::parse(row, "runs.status")?;
            let n: u64 = columns::int(row, "n")?;
            Ok((status, n))
        })
        .collect()
}
