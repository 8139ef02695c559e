//! `MemoryStore`: an in-memory [`Store`] for tests and for embedders that need no durability.
//!
//! It implements the same contract as the SQLite store (claiming with leases, gap-free per-run
//! event numbers, artifact upserts, newest-first listing) so that engine tests written against
//! it stay true for the real store; the store contract suite runs against both. Everything
//! lives behind one `std::sync::Mutex` that is never held across an `.await` (no method awaits
//! while holding it), so every method is atomic and cancellation-safe by construction. A batch
//! applies its writes one by one under the lock and undoes them if a later one fails, before
//! the lock is released.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::backend::{
    BatchOutcome, ClaimRequest, QueueOrder, RunFilter, Store, StoreError, StoreWrite,
};
use crate::domain::{
    Artifact, Event, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId, UnixMs, now_ms,
};

/// An in-memory [`Store`]. Data is lost when it is dropped; "durable" means "visible to every
/// later call on the same value".
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<RunId, Run>,
    steps: HashMap<StepId, Step>,
    /// Events per run, in `seq` order; the event with seq `n` sits at index `n - 1`.
    events: HashMap<RunId, Vec<Event>>,
    /// Artifacts per run, in recording order of their first record.
    artifacts: HashMap<RunId, Vec<Artifact>>,
    last_artifact_id: i64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write behind (every write
        // validates before it mutates, and nothing between the writes of a batch can panic),
        // so the data behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sort key of "creation order": creation time, then id to break ties.
fn created_key(run: &Run) -> (UnixMs, RunId) {
    (run.created_at, run.id)
}

/// True when a worker may claim `run` at `now` (see the contract of [`Store`]). A `RUNNING`
/// run without a lease was released by its worker and is free to be resumed.
fn is_claimable(run: &Run, now: UnixMs) -> bool {
    match run.status {
        RunStatus::Pending => true,
        RunStatus::Running => run.lease_expires_at.is_none_or(|until| until <= now),
        _ => false,
    }
}

impl Inner {
    fn run(&self, id: RunId) -> Result<&Run, StoreError> {
        self.runs
            .get(&id)
            .ok_or_else(|| StoreError::run_not_found(id))
    }

    fn run_mut(&mut self, id: RunId) -> Result<&mut Run, StoreError> {
        self.runs
            .get_mut(&id)
            .ok_or_else(|| StoreError::run_not_found(id))
    }

    fn seq_taken(&self, run_id: RunId, seq: u32, except: StepId) -> bool {
        self.steps
            .values()
            .any(|s| s.run_id == run_id && s.seq == seq && s.id != except)
    }

    // The writes shared by the single methods and `write_batch`. Each validates before it
    // mutates, so a failed write changed nothing, and returns how to take back a successful
    // one, so that a batch can be undone when a later write of it fails.

    fn update_run(&mut self, run: &Run) -> Result<Undo, StoreError> {
        let stored = self.run_mut(run.id)?;
        let updated = Run {
            // Creation time orders the queue and the listings, and the lease belongs to the
            // claim/renew/release methods: neither changes through an update.
            created_at: stored.created_at,
            worker_id: stored.worker_id.clone(),
            lease_expires_at: stored.lease_expires_at,
            lease_epoch: stored.lease_epoch,
            updated_at: now_ms(),
            ..run.clone()
        };
        Ok(Undo::Run(std::mem::replace(stored, updated)))
    }

    fn insert_step(&mut self, step: &Step) -> Result<Undo, StoreError> {
        self.run(step.run_id)?;
        if self.steps.contains_key(&step.id) {
            return Err(StoreError::Conflict {
                detail: format!("step {} already exists", step.id),
            });
        }
        if self.seq_taken(step.run_id, step.seq, step.id) {
            return Err(StoreError::Conflict {
                detail: format!("run {} already has a step {}", step.run_id, step.seq),
            });
        }
        self.steps.insert(step.id, step.clone());
        Ok(Undo::InsertedStep(step.id))
    }

    fn update_step(&mut self, step: &Step) -> Result<Undo, StoreError> {
        let run_id = match self.steps.get(&step.id) {
            Some(stored) => stored.run_id,
            None => return Err(StoreError::step_not_found(step.id)),
        };
        if self.seq_taken(run_id, step.seq, step.id) {
            return Err(StoreError::Conflict {
                detail: format!("run {run_id} already has a step {}", step.seq),
            });
        }
        let Some(stored) = self.steps.get_mut(&step.id) else {
            return Err(StoreError::step_not_found(step.id));
        };
        // A step never moves to another run.
        let updated = Step {
            run_id,
            ..step.clone()
        };
        Ok(Undo::Step(std::mem::replace(stored, updated)))
    }

    fn append_event(&mut self, event: &NewEvent) -> Result<(Event, Undo), StoreError> {
        self.run(event.run_id)?;
        if let Some(step_id) = event.step_id
            && !self.steps.contains_key(&step_id)
        {
            return Err(StoreError::step_not_found(step_id));
        }
        let events = self.events.entry(event.run_id).or_default();
        let appended = Event {
            seq: events.len() as u64 + 1,
            run_id: event.run_id,
            step_id: event.step_id,
            kind: event.kind,
            ts: event.ts,
            payload: event.payload.clone(),
        };
        events.push(appended.clone());
        Ok((appended, Undo::AppendedEvent(event.run_id)))
    }

    fn record_artifact(&mut self, artifact: &NewArtifact) -> Result<(Artifact, Undo), StoreError> {
        self.run(artifact.run_id)?;
        let recorded_at = now_ms();
        let next_id = self.last_artifact_id + 1;
        let artifacts = self.artifacts.entry(artifact.run_id).or_default();
        if let Some((index, existing)) = artifacts
            .iter_mut()
            .enumerate()
            .find(|(_, a)| a.location == artifact.location && a.path == artifact.path)
        {
            let old = existing.clone();
            existing.kind = artifact.kind;
            existing.checksum.clone_from(&artifact.checksum);
            existing.recorded_at = recorded_at;
            return Ok((existing.clone(), Undo::Artifact(index, old)));
        }
        let recorded = Artifact {
            id: next_id,
            run_id: artifact.run_id,
            kind: artifact.kind,
            location: artifact.location,
            path: artifact.path.clone(),
            checksum: artifact.checksum.clone(),
            recorded_at,
        };
        artifacts.push(recorded.clone());
        self.last_artifact_id = next_id;
        Ok((recorded, Undo::RecordedArtifact(artifact.run_id)))
    }

    /// `Conflict` unless the run's lease epoch is still `epoch`.
    fn fence(&self, run_id: RunId, epoch: u64) -> Result<(), StoreError> {
        let run = self.run(run_id)?;
        if run.lease_epoch == epoch {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                detail: crate::backend::fence_detail(run_id, epoch, run.lease_epoch),
            })
        }
    }

    /// Takes back one applied write. Undos run newest first, so each finds the state its
    /// write left behind.
    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Run(old) => {
                self.runs.insert(old.id, old);
            }
            Undo::InsertedStep(id) => {
                self.steps.remove(&id);
            }
            Undo::Step(old) => {
                self.steps.insert(old.id, old);
            }
            Undo::AppendedEvent(run_id) => {
                if let Some(events) = self.events.get_mut(&run_id) {
                    events.pop();
                }
            }
            Undo::Artifact(index, old) => {
                if let Some(slot) = self
                    .artifacts
                    .get_mut(&old.run_id)
                    .and_then(|a| a.get_mut(index))
                {
                    *slot = old;
                }
            }
            Undo::RecordedArtifact(run_id) => {
                if let Some(artifacts) = self.artifacts.get_mut(&run_id) {
                    artifacts.pop();
                }
                self.last_artifact_id -= 1;
            }
        }
    }
}

/// How to take back one write of a batch (see [`Inner::undo`]).
#[derive(Debug)]
enum Undo {
    /// A check that changed nothing.
    Nothing,
    /// Put back the run as it was before an update.
    Run(Run),
    /// Remove an inserted step.
    InsertedStep(StepId),
    /// Put back the step as it was before an update.
    Step(Step),
    /// Remove the last event of the run.
    AppendedEvent(RunId),
    /// Put back the artifact at this index of its run as it was before it was recorded again.
    Artifact(usize, Artifact),
    /// Remove the last artifact of the run and give its id back.
    RecordedArtifact(RunId),
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_run(&self, run: &Run) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.runs.contains_key(&run.id) {
            return Err(StoreError::Conflict {
                detail: format!("run {} already exists", run.id),
            });
        }
        inner.runs.insert(run.id, run.clone());
        Ok(())
    }

    async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        self.lock().run(id).cloned()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let inner = self.lock();
        let before = match filter.before {
            Some(id) => Some(created_key(inner.run(id)?)),
            None => None,
        };
        let mut runs: Vec<&Run> = inner
            .runs
            .values()
            .filter(|r| {
                filter
                    .workspace_root
                    .as_ref()
                    .is_none_or(|w| w.as_os_str() == r.workspace_root.as_os_str())
            })
            .filter(|r| filter.statuses.is_empty() || filter.statuses.contains(&r.status))
            .filter(|r| before.is_none_or(|b| created_key(r) < b))
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(created_key(r)));
        if let Some(limit) = filter.limit {
            runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(runs.into_iter().cloned().collect())
    }

    async fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        self.lock().update_run(run).map(drop)
    }

    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError> {
        let mut inner = self.lock();
        let candidates = inner.runs.values().filter(|r| {
            is_claimable(r, req.now)
                && !req.skip_runs.contains(&r.id)
                && !req
                    .skip_workspaces
                    .iter()
                    .any(|w| w.as_os_str() == r.workspace_root.as_os_str())
        });
        let chosen = match req.order {
            QueueOrder::Fifo => candidates.min_by_key(|r| created_key(r)),
            QueueOrder::NewestFirst => candidates.max_by_key(|r| created_key(r)),
        };
        let Some(id) = chosen.map(|r| r.id) else {
            return Ok(None);
        };
        let run = inner.run_mut(id)?;
        run.status = RunStatus::Running;
        run.worker_id = Some(req.worker_id.clone());
        run.lease_expires_at = Some(req.now.saturating_add(req.lease_ms));
        run.lease_epoch += 1;
        run.updated_at = req.now;
        Ok(Some(run.clone()))
    }

    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        if run.worker_id.as_deref() != Some(worker_id) {
            return Err(StoreError::Conflict {
                detail: format!("run {run_id} is not held by worker {worker_id}"),
            });
        }
        run.lease_expires_at = Some(until);
        Ok(())
    }

    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        if run.worker_id.as_deref() == Some(worker_id) {
            run.worker_id = None;
            run.lease_expires_at = None;
        }
        Ok(())
    }

    async fn insert_step(&self, step: &Step) -> Result<(), StoreError> {
        self.lock().insert_step(step).map(drop)
    }

    async fn update_step(&self, step: &Step) -> Result<(), StoreError> {
        self.lock().update_step(step).map(drop)
    }

    async fn get_step(&self, id: StepId) -> Result<Step, StoreError> {
        self.lock()
            .steps
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::step_not_found(id))
    }

    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError> {
        let inner = self.lock();
        inner.run(run_id)?;
        let mut steps: Vec<Step> = inner
            .steps
            .values()
            .filter(|s| s.run_id == run_id)
            .cloned()
            .collect();
        steps.sort_by_key(|s| s.seq);
        Ok(steps)
    }

    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError> {
        self.lock().append_event(event).map(|(event, _)| event)
    }

    async fn events_after(
        &self,
        run_id: RunId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        inner.run(run_id)?;
        let Some(events) = inner.events.get(&run_id) else {
            return Ok(Vec::new());
        };
        // The event with seq `n` sits at index `n - 1`, so the tail after `after_seq` starts at
        // index `after_seq`.
        let start = usize::try_from(after_seq).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(events.iter().skip(start).take(limit).cloned().collect())
    }

    async fn last_event_seq(&self, run_id: RunId) -> Result<u64, StoreError> {
        let inner = self.lock();
        inner.run(run_id)?;
        Ok(inner.events.get(&run_id).map_or(0, |e| e.len() as u64))
    }

    async fn record_artifact(&self, artifact: &NewArtifact) -> Result<Artifact, StoreError> {
        self.lock()
            .record_artifact(artifact)
            .map(|(artifact, _)| artifact)
    }

    async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
        let inner = self.lock();
        inner.run(run_id)?;
        Ok(inner.artifacts.get(&run_id).cloned().unwrap_or_default())
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        let inner = self.lock();
        let mut counts: HashMap<RunStatus, u64> = HashMap::new();
        for run in inner.runs.values() {
            *counts.entry(run.status).or_default() += 1;
        }
        let mut counts: Vec<(RunStatus, u64)> = counts.into_iter().collect();
        counts.sort_by_key(|(status, _)| *status);
        Ok(counts)
    }

    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
        let mut inner = self.lock();
        let mut outcome = BatchOutcome::default();
        let mut undo = Vec::with_capacity(writes.len());
        for write in writes {
            let applied = match write {
                StoreWrite::UpdateRun(run) => inner.update_run(run),
                StoreWrite::InsertStep(step) => inner.insert_step(step),
                StoreWrite::UpdateStep(step) => inner.update_step(step),
                StoreWrite::AppendEvent(event) => inner.append_event(event).map(|(event, undo)| {
                    outcome.events.push(event);
                    undo
                }),
                StoreWrite::RecordArtifact(artifact) => {
                    inner.record_artifact(artifact).map(|(artifact, undo)| {
                        outcome.artifacts.push(artifact);
                        undo
                    })
                }
                StoreWrite::Fence { run_id, epoch } => {
                    inner.fence(*run_id, *epoch).map(|()| Undo::Nothing)
                }
            };
            match applied {
                Ok(u) => undo.push(u),
                Err(e) => {
                    // Still under the lock: nobody saw the partial batch.
                    for u in undo.into_iter().rev() {
                        inner.undo(u);
                    }
                    return Err(e);
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::store_contract;

    #[tokio::test]
    async fn memory_store_satisfies_the_store_contract() {
        let store = MemoryStore::new();
        store_contract::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_appends_concurrently_without_gaps() {
        store_contract::concurrent_appends(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_batches_concurrently_without_gaps() {
        store_contract::concurrent_batches(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_never_hands_one_run_to_two_workers() {
        store_contract::concurrent_claims(Arc::new(MemoryStore::new())).await;
    }
}
