//! The `Store` trait: durable runs, steps, events and artifacts, plus the claiming and lease
//! protocol that lets several workers (later: several hosts) share one queue of runs.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::domain::{
    Artifact, Event, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId, UnixMs,
};

/// Errors of a [`Store`]. The engine branches on the variant, never on the text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The run, step or event asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. `run 0190...`.
        what: String,
    },
    /// The write conflicts with the stored state: a duplicate id, a lost lease, a run that is
    /// not in the expected state.
    #[error("conflict: {detail}")]
    Conflict {
        /// What conflicted.
        detail: String,
    },
    /// A transient failure (busy database, lost connection): the same call may succeed later.
    /// Writes that returned this were not applied.
    #[error("store temporarily unavailable")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A permanent failure (corrupt database, read-only or full disk, failed migration).
    #[error("store failed")]
    Fatal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A `NotFound` for a run id.
    pub fn run_not_found(id: RunId) -> Self {
        Self::NotFound {
            what: format!("run {id}"),
        }
    }

    /// A `NotFound` for a step id.
    pub fn step_not_found(id: StepId) -> Self {
        Self::NotFound {
            what: format!("step {id}"),
        }
    }
}

/// The `Conflict` detail of a refused [`StoreWrite::Fence`], the same in every store.
pub fn fence_detail(run_id: RunId, presented: u64, current: u64) -> String {
    format!(
        "run {run_id} was taken over: lease epoch {presented} is stale (the run is at epoch {current})"
    )
}

/// How the queue of pending runs is ordered when a worker claims the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrder {
    /// Oldest run first.
    #[default]
    Fifo,
    /// Newest run first.
    NewestFirst,
}

/// A worker's request for the next run to work on.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimRequest {
    /// Who claims; stored on the run while the lease holds.
    pub worker_id: String,
    /// The current time (passed in so tests and several hosts agree on one clock source).
    pub now: UnixMs,
    /// The lease lasts until `now + lease_ms`; the worker renews it while it works.
    pub lease_ms: i64,
    /// Queue order among the claimable runs.
    pub order: QueueOrder,
    /// Runs in these workspaces are skipped (their per-workspace cap is reached).
    pub skip_workspaces: Vec<PathBuf>,
    /// Runs with these ids are skipped (e.g. already being worked by this worker).
    pub skip_runs: Vec<RunId>,
}

/// Which runs to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// Only runs of this workspace.
    pub workspace_root: Option<PathBuf>,
    /// Only runs in one of these states (empty: any state).
    pub statuses: Vec<RunStatus>,
    /// At most this many runs (newest first); `None` for all.
    pub limit: Option<u32>,
    /// Only runs created before this run (keyset pagination, newest first).
    pub before: Option<RunId>,
}

/// One write of a [`Store::write_batch`].
#[derive(Clone, Debug, PartialEq)]
pub enum StoreWrite {
    /// Same as [`Store::update_run`].
    UpdateRun(Run),
    /// Same as [`Store::insert_step`].
    InsertStep(Step),
    /// Same as [`Store::update_step`].
    UpdateStep(Step),
    /// Same as [`Store::append_event`].
    AppendEvent(NewEvent),
    /// Same as [`Store::record_artifact`].
    RecordArtifact(NewArtifact),
    /// Fencing: fails the batch with [`StoreError::Conflict`] unless the run's
    /// [`lease_epoch`](crate::domain::Run::lease_epoch) is still `epoch` (no other claim of
    /// the run happened since the worker's own), and with [`StoreError::NotFound`] for an
    /// unknown run. A worker puts it first in each batch it writes for a run it claimed, so
    /// its writes stop landing the moment another worker takes the run over. The check and
    /// the rest of the batch are one atomic unit: a claim cannot slip in between.
    Fence {
        /// The run the writes belong to.
        run_id: RunId,
        /// The epoch the worker's claim returned.
        epoch: u64,
    },
}

/// What a [`Store::write_batch`] created, in batch order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchOutcome {
    /// The appended events with their sequence numbers, in the order of the batch.
    pub events: Vec<Event>,
    /// The recorded artifacts, in the order of the batch.
    pub artifacts: Vec<Artifact>,
}

/// A change to a shared store, announced by the store itself (PostgreSQL's LISTEN/NOTIFY),
/// whichever process made it: it wakes the scheduler of every host when a run is created or
/// freed, and feeds the followers of a run that executes on another host, without polling.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChange {
    /// A run was created, or its status or lease holder changed (claimed, released, ended).
    Run {
        /// The run.
        run_id: RunId,
        /// Its status after the change.
        status: RunStatus,
    },
    /// An event was appended to a run.
    Event {
        /// The run.
        run_id: RunId,
        /// The event's sequence number.
        seq: u64,
    },
    /// Changes may have been missed (the store's listening connection was lost and made
    /// again, or a receiver fell behind): whoever waits on changes re-reads what it needs.
    Resync,
}

/// Durable storage for the engine.
///
/// # Contract
/// - **Durability**: when a write method returns `Ok`, the write survives a crash of the
///   process. When it returns an error, nothing of it was applied (writes are atomic). A
///   [`Store::write_batch`] is one such write: all of its writes or none of them.
/// - **Ordering**: writes made by one caller are applied in call order, and the writes of a
///   batch in batch order (a later write of a batch sees the earlier ones, e.g. an event may
///   name a step the same batch inserts). The engine sends a run's records one batch at a
///   time, in order: the next batch only after the previous one returned.
/// - **Events** are append-only. [`Store::append_event`] (and an append inside a batch)
///   assigns the run's next sequence number: the first event of a run gets 1, and the numbers
///   of one run have no gaps and no duplicates even when several tasks append or write
///   batches at once. The events of one batch get consecutive numbers in batch order unless
///   another caller appends to the same run at the same moment (the numbers then interleave,
///   still in each caller's order).
/// - **Claiming**: a run is claimable when it is `PENDING`, or `RUNNING` with its lease expired
///   (its worker died). [`Store::claim_next_run`] atomically marks the chosen run `RUNNING`
///   and gives it to one worker with a lease; two concurrent claims never get the same run.
///   `PAUSED` and terminal runs are never claimed. Every claim increments the run's
///   `lease_epoch`, and a batch that starts with a [`StoreWrite::Fence`] for an older epoch
///   is refused with [`StoreError::Conflict`] (fencing: a worker whose run was taken over
///   cannot write to it again).
/// - **Idempotency**: `update_*` calls may be repeated with the same value. `create_run` and
///   `insert_step` with an existing id return [`StoreError::Conflict`].
/// - **Cancellation**: futures may be dropped; a dropped write is either fully applied or not
///   at all.
/// - **Errors**: an unknown id is [`StoreError::NotFound`]; a busy database that stays busy
///   past the backend's own waiting is [`StoreError::Retryable`]; a write is never silently
///   dropped.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts a new run.
    async fn create_run(&self, run: &Run) -> Result<(), StoreError>;

    /// Reads one run.
    async fn get_run(&self, id: RunId) -> Result<Run, StoreError>;

    /// Lists runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;

    /// Replaces the stored run with `run` (matched by id) and sets `updated_at`.
    /// The lease columns (`worker_id`, `lease_expires_at`, `lease_epoch`) are not changed by
    /// this call: they belong to the claim/renew/release methods.
    async fn update_run(&self, run: &Run) -> Result<(), StoreError>;

    /// Atomically picks the next claimable run (see the contract) in `req.order`, marks it
    /// `RUNNING` with `worker_id` and a lease until `req.now + req.lease_ms`, increments its
    /// `lease_epoch` (the fencing token of this claim), and returns it.
    async fn claim_next_run(&self, req: &ClaimRequest) -> Result<Option<Run>, StoreError>;

    /// Extends the lease of a run held by `worker_id` to `until`. Returns
    /// [`StoreError::Conflict`] when the worker no longer holds the run.
    async fn renew_lease(
        &self,
        run_id: RunId,
        worker_id: &str,
        until: UnixMs,
    ) -> Result<(), StoreError>;

    /// Gives up the lease of a run held by `worker_id` (no-op if it is not held by it).
    async fn release_run(&self, run_id: RunId, worker_id: &str) -> Result<(), StoreError>;

    /// Inserts a new step.
    async fn insert_step(&self, step: &Step) -> Result<(), StoreError>;

    /// Replaces a stored step (matched by id).
    async fn update_step(&self, step: &Step) -> Result<(), StoreError>;

    /// Reads one step.
    async fn get_step(&self, id: StepId) -> Result<Step, StoreError>;

    /// All steps of a run in `seq` order.
    async fn list_steps(&self, run_id: RunId) -> Result<Vec<Step>, StoreError>;

    /// Appends an event and returns it with its per-run sequence number.
    async fn append_event(&self, event: &NewEvent) -> Result<Event, StoreError>;

    /// Events of a run with `seq > after_seq`, in order, at most `limit`.
    async fn events_after(
        &self,
        run_id: RunId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The highest sequence number of a run's events (0 when it has none).
    async fn last_event_seq(&self, run_id: RunId) -> Result<u64, StoreError>;

    /// Records an artifact; recording the same `(run_id, location, path)` again updates its
    /// kind and checksum.
    async fn record_artifact(&self, artifact: &NewArtifact) -> Result<Artifact, StoreError>;

    /// All artifacts of a run.
    async fn list_artifacts(&self, run_id: RunId) -> Result<Vec<Artifact>, StoreError>;

    /// How many runs are in each status (statuses with no runs may be left out).
    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, u64)>, StoreError>;

    /// Applies `writes` in order as one atomic unit: all of them or none. It saves the
    /// engine a round trip (and a commit) per write when several belong together, e.g. the
    /// bookkeeping between two agent calls.
    ///
    /// Each write is validated exactly as its single method would validate it and fails with
    /// the same error (an unknown run or step is [`StoreError::NotFound`], a duplicate step is
    /// [`StoreError::Conflict`]). The error of the first failing write is returned and nothing
    /// of the batch is applied: no event of a failed batch uses up a sequence number. An empty
    /// batch is a no-op that returns an empty [`BatchOutcome`]. A dropped call is applied
    /// entirely or not at all, like any write.
    async fn write_batch(&self, writes: &[StoreWrite]) -> Result<BatchOutcome, StoreError>;

    /// Whether the store can serve reads and accept writes now, for health checks (`GET
    /// /health` reports the error as its `problem`). The error says what is wrong: a full
    /// disk, a write that failed and still fails. The default reads the run counts; a
    /// backend that can tell whether it can write (free space, a probe write) does more.
    async fn check_health(&self) -> Result<(), StoreError> {
        self.count_runs_by_status().await.map(|_| ())
    }

    /// A feed of the changes made to this store by any process sharing it, for stores that
    /// several hosts share (PostgreSQL). `None` (the default) for a store that only this
    /// process writes: the engine then learns of changes from its own calls.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        None
    }
}
