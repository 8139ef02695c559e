//! `write_batch`: several writes in one transaction, through the same statements as the
//! single write methods, so a batch validates and fails exactly as its writes would alone.

use loop_engine::backend::{BatchOutcome, StoreError, StoreWrite};
use loop_engine::domain::NewEvent;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use crate::error::map_sqlx;
use crate::events::{self, Group, MAX_GROUP};
use crate::{artifacts, runs, steps};

/// Applies `writes` in order in one transaction, or nothing of them.
///
/// `BEGIN IMMEDIATE` takes the write lock before the first statement (waiting under
/// `busy_timeout`), so a busy database fails the batch before it wrote anything (and the
/// caller's retry starts it afresh), and the events' `MAX(seq) + 1` is read by the only
/// writer, as in a single append. Any error returns early and drops the transaction, which
/// rolls it back; so does dropping this future before the commit.
pub(crate) async fn write(
    writer: &SqlitePool,
    writes: &[StoreWrite],
) -> Result<BatchOutcome, StoreError> {
    let mut outcome = BatchOutcome::default();
    if writes.is_empty() {
        return Ok(outcome);
    }
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(map_sqlx)?;
    let mut rest = writes;
    while let Some((write, after)) = rest.split_first() {
        match write {
            StoreWrite::AppendEvent(_) => {
                // Consecutive appends go in as one statement.
                let group: Vec<&NewEvent> = rest
                    .iter()
                    .map_while(|w| match w {
                        StoreWrite::AppendEvent(event) => Some(event),
                        _ => None,
                    })
                    .take(MAX_GROUP)
                    .collect();
                rest = &rest[group.len()..];
                append(&mut tx, &group, &mut outcome).await?;
                continue;
            }
            StoreWrite::UpdateRun(run) => runs::update(&mut tx, run).await?,
            StoreWrite::InsertStep(step) => steps::insert(&mut tx, step).await?,
            StoreWrite::UpdateStep(step) => steps::update(&mut tx, step).await?,
            StoreWrite::RecordArtifact(artifact) => outcome
                .artifacts
                .push(artifacts::record(&mut tx, artifact).await?),
            StoreWrite::Fence { run_id, epoch } => runs::fence(&mut tx, *run_id, *epoch).await?,
        }
        rest = after;
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(outcome)
}

/// Appends consecutive events of a batch inside its transaction, failing with the error of
/// the first event that cannot be appended.
async fn append(
    conn: &mut SqliteConnection,
    group: &[&NewEvent],
    outcome: &mut BatchOutcome,
) -> Result<(), StoreError> {
    if group.len() > 1 {
        match events::append_group(conn, group).await? {
            Group::Appended(appended) => {
                for (event, appended) in group.iter().zip(appended) {
                    match appended {
                        Some(appended) => outcome.events.push(appended),
                        // The events before it were appended; the whole batch rolls back.
                        None => return Err(StoreError::run_not_found(event.run_id)),
                    }
                }
                return Ok(());
            }
            // Nothing of the group was appended: one by one finds the first bad event and
            // reports it exactly as a single append would.
            Group::UnknownStep => {}
        }
    }
    for event in group {
        outcome.events.push(events::append(conn, event).await?);
    }
    Ok(())
}
