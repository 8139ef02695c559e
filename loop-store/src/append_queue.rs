//! Group commit for `append_event`: concurrent appends (many runs emitting output at once)
//! share one statement and one commit instead of queueing for the writer one by one.
//!
//! Each call puts its event in the queue and waits for its own answer. The first call that
//! finds no drain running spawns one: a task that takes everything queued (up to
//! [`MAX_GROUP`]) as one group, appends it in one statement, answers every caller, and repeats
//! until the queue is empty. Appends that arrive while a group is written form the next group,
//! so groups grow with the load by themselves and a lone append waits for nobody.
//!
//! The drain is a task of its own rather than one of the callers, so that a caller whose
//! future is dropped cannot strand the others: its event, once queued, is appended anyway (a
//! dropped write may be applied, the contract allows it) and only its answer is discarded.
//!
//! Every event still gets its own result: the events of unknown runs are left out of the
//! group by the statement, and a group that fails because one event names an unknown step is
//! appended again one event at a time, so one bad event fails alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use loop_engine::backend::StoreError;
use loop_engine::domain::{Event, NewEvent};
use sqlx::sqlite::SqlitePool;
use tokio::sync::oneshot;

use crate::error::map_sqlx;
use crate::events::{self, Group, MAX_GROUP};
use crate::retry::retry;

/// The queue of one database's appends, shared by the clones of its store.
#[derive(Debug, Default)]
pub(crate) struct AppendQueue {
    state: Mutex<State>,
    /// Statements written so far (groups and one-by-one retries), for tests and diagnostics.
    statements: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<Pending>,
    /// True while a drain task runs; it is the only one that takes from `pending`.
    draining: bool,
}

#[derive(Debug)]
struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<Event, StoreError>>,
}

impl AppendQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is held only to push or take whole entries, never across an `.await`, so
        // a panic elsewhere cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many append statements were written so far.
    pub(crate) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Appends `event` through the queue and returns it with its sequence number.
    pub(crate) async fn append(
        self: &Arc<Self>,
        writer: &SqlitePool,
        event: &NewEvent,
    ) -> Result<Event, StoreError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.pending.push(Pending {
                event: event.clone(),
                reply,
            });
            !std::mem::replace(&mut state.draining, true)
        };
        if start {
            tokio::spawn(drain(Arc::clone(self), writer.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            // Only a drain that was cut off (its runtime shut down) drops a reply unanswered.
            Err(StoreError::Fatal(
                "the event append queue stopped before it wrote the event".into(),
            ))
        })
    }
}

/// Clears `draining` if the drain task ends without emptying the queue (cancelled at runtime
/// shutdown, or a panic), and fails the events left in it, so that no caller waits forever
/// and a later append starts a new drain.
struct DrainGuard {
    queue: Arc<AppendQueue>,
    finished: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.queue.lock();
            state.draining = false;
            // Dropping the replies answers their callers with an error.
            state.pending.clear();
        }
    }
}

async fn drain(queue: Arc<AppendQueue>, writer: SqlitePool) {
    let mut guard = DrainGuard {
        queue,
        finished: false,
    };
    loop {
        let group: Vec<Pending> = {
            let mut state = guard.queue.lock();
            if state.pending.is_empty() {
                // Checked and cleared under one lock: an append that comes after this sees
                // `draining` false and starts the next drain.
                state.draining = false;
                guard.finished = true;
                return;
            }
            let n = state.pending.len().min(MAX_GROUP);
            state.pending.drain(..n).collect()
        };
        write_group(&guard.queue, &writer, group).await;
        // The callers just answered typically append again at once; letting them run before
        // the next group is taken makes it one group of all of them rather than a group of
        // the first one or two and then another of the rest.
        tokio::task::yield_now().await;
    }
}

/// Appends one group and answers each of its callers.
async fn write_group(queue: &AppendQueue, writer: &SqlitePool, group: Vec<Pending>) {
    if let [one] = &group[..] {
        let result = append_one(queue, writer, &one.event).await;
        answer(group, vec![result]);
        return;
    }
    let events: Vec<&NewEvent> = group.iter().map(|p| &p.event).collect();
    let result = retry("append_event", || async {
        let mut conn = writer.acquire().await.map_err(map_sqlx)?;
        queue.statements.fetch_add(1, Ordering::Relaxed);
        events::append_group(&mut conn, &events).await
    })
    .await;
    match result {
        Ok(Group::Appended(appended)) => {
            let results = group
                .iter()
                .zip(appended)
                .map(|(p, appended)| {
                    appended.ok_or_else(|| StoreError::run_not_found(p.event.run_id))
                })
                .collect();
            answer(group, results);
        }
        Err(StoreError::Retryable(e)) => {
            // The database stayed busy through every retry: each caller gets that answer
            // (the error itself can have only one owner, so the others get its text).
            let text = e.to_string();
            let mut results = vec![Err(StoreError::Retryable(e))];
            results
                .extend((1..group.len()).map(|_| Err(StoreError::Retryable(text.clone().into()))));
            answer(group, results);
        }
        // An unknown step, or a failure that may be one event's (nothing was appended): each
        // event on its own gets exactly the answer a lone append would.
        Ok(Group::UnknownStep) | Err(_) => {
            let mut results = Vec::with_capacity(group.len());
            for p in &group {
                results.push(append_one(queue, writer, &p.event).await);
            }
            answer(group, results);
        }
    }
}

async fn append_one(
    queue: &AppendQueue,
    writer: &SqlitePool,
    event: &NewEvent,
) -> Result<Event, StoreError> {
    retry("append_event", || async {
        let mut conn = writer.acquire().await.map_err(map_sqlx)?;
        queue.statements.fetch_add(1, Ordering::Relaxed);
        events::append(&mut conn, event).await
    })
    .await
}

fn answer(group: Vec<Pending>, results: Vec<Result<Event, StoreError>>) {
    for (pending, result) in group.into_iter().zip(results) {
        // A caller that dropped its future no longer wants the answer; its event is written
        // all the same.
        let _ = pending.reply.send(result);
    }
}
