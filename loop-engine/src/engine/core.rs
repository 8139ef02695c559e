//! `Engine` and its builder, and the queries users make on runs (get, list, follow, wait).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::backend::{Executor, Notifier, RunFilter, Store, Vcs};
use crate::domain::{Artifact, Event, EventKind, Run, RunId, RunStatus, Step};
use crate::engine::hub::{CurrentOutput, Hub, LiveOutput};
use crate::engine::inner::{EngineSettings, Inner, SchedState};
use crate::engine::metrics::{Metrics, MetricsSnapshot};
use crate::engine::notify::Notifications;
use crate::error::EngineError;
use crate::impls::LogNotifier;
use crate::impls::notify::RetryPolicy;

/// Builds an [`Engine`]. Backends are taken as `impl Trait` and stored as trait objects.
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    executor: Option<Arc<dyn Executor>>,
    vcs: Option<Arc<dyn Vcs>>,
    notifier: Option<Arc<dyn Notifier>>,
    notify_retry: RetryPolicy,
    settings: EngineSettings,
}

impl EngineBuilder {
    /// The store (required).
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The store, already shared.
    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// One executor for every run. Without it, each run uses the executor its config names
    /// (`executor=claude` with `claude_bin`, or `executor=command` with `agent_cmd`).
    pub fn executor(mut self, executor: impl Executor + 'static) -> Self {
        self.executor = Some(Arc::new(executor));
        self
    }

    /// The executor, already shared.
    pub fn executor_arc(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Version control (default: the `git` CLI).
    pub fn vcs(mut self, vcs: impl Vcs + 'static) -> Self {
        self.vcs = Some(Arc::new(vcs));
        self
    }

    /// The notifier (default: tracing logs).
    pub fn notifier(mut self, notifier: impl Notifier + 'static) -> Self {
        self.notifier = Some(Arc::new(notifier));
        self
    }

    /// How the built-in notifiers of the runs' configs (`notify_webhook_url`, `notify_cmd`,
    /// `notify_desktop`) retry (default: [`RetryPolicy::default`]).
    pub fn notify_retry(mut self, policy: RetryPolicy) -> Self {
        self.notify_retry = policy;
        self
    }

    /// Engine-wide settings.
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Builds the engine. Fails when no store was given.
    pub fn build(self) -> Result<Engine, EngineError> {
        let store = self.store.ok_or_else(|| EngineError::InvalidInput {
            field: "store".into(),
            detail: "an engine needs a store (e.g. MemoryStore or loop_store::SqliteStore)".into(),
        })?;
        let mut settings = self.settings;
        settings.max_concurrency = settings.max_concurrency.max(1);
        Ok(Engine {
            inner: Arc::new(Inner {
                notifications: Notifications::new(store.clone(), self.notify_retry),
                store,
                executor: self.executor,
                vcs: self
                    .vcs
                    .unwrap_or_else(|| Arc::new(crate::impls::GitCli::new())),
                notifier: self.notifier.unwrap_or_else(|| Arc::new(LogNotifier)),
                settings,
                hub: Hub::default(),
                metrics: Metrics::default(),
                sched: Mutex::new(SchedState::default()),
                wake: Notify::new(),
                prep_locks: tokio::sync::Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                postmortems: Mutex::default(),
            }),
        })
    }
}

/// The agent-loop engine: one value shared by the HTTP server, the scheduler and embedders.
/// Cloning is cheap (it is an `Arc`).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            store: None,
            executor: None,
            vcs: None,
            notifier: None,
            notify_retry: RetryPolicy::default(),
            settings: EngineSettings::default(),
        }
    }

    /// The engine's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// The store the engine persists to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// One run.
    pub async fn get_run(&self, id: RunId) -> Result<Run, EngineError> {
        Ok(self.inner.store.get_run(id).await?)
    }

    /// Runs matching `filter`, newest first.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, EngineError> {
        Ok(self.inner.store.list_runs(filter).await?)
    }

    /// The steps of a run.
    pub async fn steps(&self, id: RunId) -> Result<Vec<Step>, EngineError> {
        self.inner.store.get_run(id).await?;
        Ok(self.inner.store.list_steps(id).await?)
    }

    /// The artifacts of a run.
    pub async fn artifacts(&self, id: RunId) -> Result<Vec<Artifact>, EngineError> {
        self.inner.store.get_run(id).await?;
        Ok(self.inner.store.list_artifacts(id).await?)
    }

    /// Stored events of a run after sequence number `after`.
    pub async fn events_after(
        &self,
        id: RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, EngineError> {
        Ok(self.inner.store.events_after(id, after, limit).await?)
    }

    /// Live events of a run from now on. Subscribe first, then read the store, then skip live
    /// events whose `seq` was already read: nothing is lost or repeated. A lagging receiver
    /// gets `RecvError::Lagged` and should resume from the store.
    pub fn subscribe_events(&self, id: RunId) -> broadcast::Receiver<Event> {
        self.inner.hub.subscribe_events(id)
    }

    /// Live agent output of a run, and the step whose output is live now (its log file holds
    /// everything before the first received chunk's `offset`).
    pub fn subscribe_output(
        &self,
        id: RunId,
    ) -> (broadcast::Receiver<LiveOutput>, Option<CurrentOutput>) {
        self.inner.hub.subscribe_output(id)
    }

    /// Counters since the engine started.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// True when the store is shared with other hosts (it announces their changes, see
    /// [`Store::changes`]): runs may then execute elsewhere.
    pub fn store_is_shared(&self) -> bool {
        self.inner.store.changes().is_some()
    }

    /// Runs executing in this engine right now.
    pub fn running_runs(&self) -> Vec<RunId> {
        self.inner.sched().running.keys().copied().collect()
    }

    /// Waits until the run is terminal (or paused) and returns it. Event-driven: no polling.
    pub async fn wait(&self, id: RunId) -> Result<Run, EngineError> {
        let waited = self.wait_subscribed(id).await;
        // The subscription is gone; a finished run's channels must not stay behind for it.
        self.inner.hub.release(id);
        waited
    }

    async fn wait_subscribed(&self, id: RunId) -> Result<Run, EngineError> {
        loop {
            let mut rx = self.subscribe_events(id);
            let run = self.inner.store.get_run(id).await?;
            if run.status.is_terminal() || run.status == RunStatus::Paused {
                return Ok(run);
            }
            loop {
                match rx.recv().await {
                    Ok(ev)
                        if matches!(
                            ev.kind,
                            EventKind::RunCompleted
                                | EventKind::RunFailed
                                | EventKind::RunCanceled
                                | EventKind::RunPaused
                        ) =>
                    {
                        break;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    }

    /// Stops the engine: no new runs start, running agents are stopped, their runs go back to
    /// the queue for the next start. [`Engine::run`] returns after this.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.wake.notify_one();
    }

    /// True once [`Engine::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }
}
