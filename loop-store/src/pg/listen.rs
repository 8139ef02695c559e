//! The change feed: one `LISTEN` connection per store on the channels the schema's triggers
//! `NOTIFY` (`loop_runs`: `<run id> <status>`, `loop_events`: `<run id> <seq>`), turned into
//! [`StoreChange`]s. When the connection drops, sqlx makes a new one at the next receive;
//! whatever was notified in between is lost, so receivers get [`StoreChange::Resync`].

use std::time::Duration;

use loop_engine::backend::{StoreChange, StoreError};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::broadcast;

use super::error::map_pg;

/// The channels the triggers of `migrations/postgres/` notify.
const CHANNELS: [&str; 2] = ["loop_runs", "loop_events"];

/// Starts listening (the first `LISTEN` is made before this returns, so nothing committed
/// after it is missed) and forwards changes to `tx` until the pool is closed.
pub(super) async fn spawn(
    pool: PgPool,
    tx: broadcast::Sender<StoreChange>,
) -> Result<(), StoreError> {
    let mut listener = PgListener::connect_with(&pool).await.map_err(map_pg)?;
    listener.listen_all(CHANNELS).await.map_err(map_pg)?;
    tokio::spawn(async move {
        loop {
            if pool.is_closed() {
                return;
            }
            match listener.try_recv().await {
                Ok(Some(note)) => {
                    if let Some(change) = parse(&note) {
                        // No receiver right now is fine.
                        let _ = tx.send(change);
                    }
                }
                // The connection was lost; the next receive reconnects (and listens again).
                Ok(None) => {
                    tracing::warn!("the postgres change feed lost its connection; reconnecting");
                    let _ = tx.send(StoreChange::Resync);
                }
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::warn!(error = %e, "the postgres change feed cannot receive; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(())
}

/// The change a notification announces; `None` for a payload this version cannot read.
fn parse(note: &PgNotification) -> Option<StoreChange> {
    let (id, rest) = note.payload().split_once(' ')?;
    let run_id = id.parse().ok()?;
    match note.channel() {
        "loop_runs" => Some(StoreChange::Run {
            run_id,
            status: rest.parse().ok()?,
        }),
        "loop_events" => Some(StoreChange::Event {
            run_id,
            seq: rest.parse().ok()?,
        }),
        _ => None,
    }
}
