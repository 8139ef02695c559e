//! `FaultyStore`: wraps any `Store` and fails every call while switched on, the way a full
//! disk or a read-only data dir would, to test that a store outage fails runs with a recorded
//! reason and loses nothing once the store is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use crate::backend::{BatchOutcome, ClaimRequest, RunFilter, Store, StoreError, StoreWrite};
use crate::domain::{
    Artifact, Event, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId, UnixMs,
};

/// A store that can be made to fail (see the module docs).
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl FaultyStore {
    /// Wraps `inner`; healthy until [`FaultyStore::fail`] is called.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            failing: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// From now on every call fails with a `Fatal` "no space left on device" error.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }

    /// The store works again.
    pub fn recover(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    /// How many calls were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Fatal(Box::new(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left on device",
            ))));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn create_run(&self, run: &Run) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_run(run).await
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.check_health().await
    }
    async fn get_run(&self, id: RunId) -> Result<Run, StoreError> {
        self.check()?;
        self.inner.get_run(id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        self.check()?;
        self.inner.list_runs(filter).await
    }
    async fn update_run(&self, run: &Run) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_run(run).await
    }
    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError> {
        self.check()?;
        self.inner.claim_next_run(req).await
    }
    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.renew_lease(run_id, worker_id, until).await
    }
    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.release_run(run_id, worker_id).await
    }
    async fn insert_step(&self, step: &Step) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_step(step).await
    }
    async fn update_step(&self, step: &Step) -> Result<(), StoreError> {
        self.check()?;
        self.inner.update_step(step).await
    }
    async fn get_step(&self, id: StepId) -> Result<Step, StoreError> {
        self.check()?;
        self.inner.get_step(id).await
    }
    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError> {
        self.check()?;
        self.inner.list_steps(run_id).await
    }
    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError> {
        self.check()?;
        self.inner.append_event(event).await
    }
    async fn events_after(
        &self,
        run_id: RunId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.check()?;
        self.inner.events_after(run_id, after_seq, limit).await
    }
    async fn last_event_seq(&self, run_id: RunId) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.last_event_seq(run_id).await
    }
    async fn record_artifact(&self, artifact: &NewArtifact) -> Result<Artifact, StoreError> {
        self.check()?;
        self.inner.record_artifact(artifact).await
    }
    async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError> {
        self.check()?;
        self.inner.list_artifacts(run_id).await
    }
    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        self.check()?;
        self.inner.count_runs_by_status().await
    }
    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError> {
        self.check()?;
        self.inner.write_batch(writes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impls::MemoryStore;
    use crate::testing::store_contract::{sample_event, sample_run};

    #[tokio::test]
    async fn batches_fail_while_failing_and_apply_after_recovery() {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let store = FaultyStore::new(Arc::clone(&inner));
        let run = sample_run("/ws/faulty");
        store.create_run(&run).await.unwrap();
        let batch = [StoreWrite::AppendEvent(sample_event(run.id, 1))];

        store.fail();
        assert!(matches!(
            store.write_batch(&batch).await,
            Err(StoreError::Fatal(_))
        ));
        assert_eq!(store.refused(), 1);
        assert_eq!(inner.last_event_seq(run.id).await.unwrap(), 0);

        store.recover();
        let outcome = store.write_batch(&batch).await.unwrap();
        assert_eq!(outcome.events.len(), 1);
        assert_eq!(inner.last_event_seq(run.id).await.unwrap(), 1);
    }
}
