//! `Engine`, its builder and settings, and the operations users call on runs (query, pause,
//! resume, cancel, follow).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::backend::{Executor, Notifier, QueueOrder, RunFilter, Store, Vcs};
use crate::config::{Config, ExecutorKind};
use crate::domain::{Artifact, Event, EventKind, NewEvent, Run, RunId, RunStatus, Step};
use crate::engine::hub::{CurrentOutput, Hub, LiveOutput};
use crate::engine::metrics::{Metrics, MetricsSnapshot};
use crate::error::EngineError;
use crate::impls::{ClaudeExecutor, CommandExecutor, LogNotifier};

/// Engine-wide settings (the daemon's, not a run's).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// This worker's id, stored on the runs it leases. Keep it stable across restarts of the
    /// same daemon (e.g. host name + data dir) so a restart recovers its own runs at once.
    pub worker_id: String,
    /// Hard ceiling of runs executing at once (a run's own `max_concurrency` can only lower it).
    pub max_concurrency: u32,
    /// Order of the queue of pending runs.
    pub queue_policy: QueueOrder,
    /// Lease length; running runs renew it every third of that.
    pub lease: Duration,
    /// Overrides every run's `global_log_dir` (the daemon's data dir), if set.
    pub global_log_dir: Option<PathBuf>,
    /// How long a shutdown waits for running agents to stop.
    pub stop_grace: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", std::process::id()),
            max_concurrency: 3,
            queue_policy: QueueOrder::Fifo,
            lease: Duration::from_secs(30),
            global_log_dir: None,
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Cancel and pause switches of one executing run.
#[derive(Clone, Debug)]
pub(crate) struct RunControl {
    /// Fired by a user cancel.
    pub(crate) cancel: CancellationToken,
    /// Set by a user pause; honoured at the next step boundary.
    pub(crate) pause: Arc<AtomicBool>,
    /// The run's workspace (for the per-workspace cap).
    pub(crate) workspace: PathBuf,
}

#[derive(Default)]
pub(crate) struct SchedState {
    pub(crate) running: HashMap<RunId, RunControl>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Option<Arc<dyn Executor>>,
    pub(crate) vcs: Arc<dyn Vcs>,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) settings: EngineSettings,
    pub(crate) hub: Hub,
    pub(crate) metrics: Metrics,
    pub(crate) sched: Mutex<SchedState>,
    pub(crate) wake: Notify,
    pub(crate) prep_locks: tokio::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Fired when the engine shuts down: running steps stop, runs go back to the queue.
    pub(crate) shutdown: CancellationToken,
}

impl Inner {
    pub(crate) fn sched(&self) -> std::sync::MutexGuard<'_, SchedState> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor for a run: the injected one, else the one its config names.
    pub(crate) fn executor_for(&self, cfg: &Config) -> Result<Arc<dyn Executor>, String> {
        if let Some(e) = &self.executor {
            return Ok(e.clone());
        }
        match cfg.executor {
            ExecutorKind::Claude => Ok(Arc::new(ClaudeExecutor::new(cfg.claude_bin.clone()))),
            ExecutorKind::Simulate => Ok(Arc::new(crate::impls::SimulatedAgent::new())),
            ExecutorKind::Command => {
                let template = cfg.agent_cmd.as_deref().unwrap_or_default();
                CommandExecutor::new(template)
                    .map(|e| Arc::new(e) as Arc<dyn Executor>)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// True when the agent's output is expected to end with a stream-json `result` line.
    pub(crate) fn expects_result_line(&self, cfg: &Config) -> bool {
        self.executor.is_none() && cfg.executor == ExecutorKind::Claude
    }

    /// Appends an event to the store and publishes it to followers.
    pub(crate) async fn emit(&self, event: NewEvent) -> Result<Event, crate::backend::StoreError> {
        let stored = self.store.append_event(&event).await?;
        self.hub.publish_event(&stored);
        Ok(stored)
    }

    /// The lock that serialises branch and worktree preparation in one workspace.
    pub(crate) async fn prep_lock(
        &self,
        workspace: &std::path::Path,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.prep_locks.lock().await;
        forget_unused_locks(&mut locks);
        locks
            .entry(workspace.to_path_buf())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Drops the preparation locks nobody holds or waits for (called when a run ends), so
    /// the map holds the workspaces being prepared right now, not every workspace ever seen.
    pub(crate) async fn forget_unused_prep_locks(&self) {
        forget_unused_locks(&mut *self.prep_locks.lock().await);
    }
}

/// Removes the locks only the map refers to. Holding or awaiting a lock needs a clone of its
/// `Arc`, so such a lock is free and unwaited, and a fresh one is equivalent.
fn forget_unused_locks(locks: &mut HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>) {
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
}

/// Builds an [`Engine`]. Backends are taken as `impl Trait` and stored as trait objects.
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    executor: Option<Arc<dyn Executor>>,
    vcs: Option<Arc<dyn Vcs>>,
    notifier: Option<Arc<dyn Notifier>>,
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

    /// Runs executing in this engine right now.
    pub fn running_runs(&self) -> Vec<RunId> {
        self.inner.sched().running.keys().copied().collect()
    }

    /// Pauses a run: a pending run is paused at once, a running one at its next step boundary.
    pub async fn pause(&self, id: RunId) -> Result<Run, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Pending => {
                let mut run = run;
                run.status = RunStatus::Paused;
                self.inner.store.update_run(&run).await?;
                self.inner
                    .emit(NewEvent::new(
                        id,
                        EventKind::RunPaused,
                        serde_json::json!({"run_id": id, "at": "queue"}),
                    ))
                    .await?;
                Ok(self.inner.store.get_run(id).await?)
            }
            RunStatus::Running => {
                let control = self.inner.sched().running.get(&id).cloned();
                match control {
                    Some(c) => {
                        c.pause.store(true, Ordering::SeqCst);
                        Ok(run)
                    }
                    None => Err(EngineError::InvalidState {
                        run_id: id,
                        detail: "run is executing on another worker".into(),
                    }),
                }
            }
            RunStatus::Paused => Ok(run),
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot pause a run that is {status}"),
            }),
        }
    }

    /// Resumes a paused run (it goes back to the queue and continues from its last durable
    /// step). A pending pause request on a running run is withdrawn.
    pub async fn resume(&self, id: RunId) -> Result<Run, EngineError> {
        let mut run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Paused => {
                run.status = RunStatus::Pending;
                self.inner.store.update_run(&run).await?;
                self.inner
                    .emit(NewEvent::new(
                        id,
                        EventKind::RunResumed,
                        serde_json::json!({"run_id": id}),
                    ))
                    .await?;
                self.inner.wake.notify_one();
                Ok(self.inner.store.get_run(id).await?)
            }
            RunStatus::Running | RunStatus::Pending => {
                if let Some(c) = self.inner.sched().running.get(&id) {
                    c.pause.store(false, Ordering::SeqCst);
                }
                Ok(run)
            }
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot resume a run that is {status}"),
            }),
        }
    }

    /// Cancels a run: a running agent is stopped, the run ends `CANCELED`.
    pub async fn cancel(&self, id: RunId) -> Result<Run, EngineError> {
        let run = self.inner.store.get_run(id).await?;
        match run.status {
            RunStatus::Running => {
                let control = self.inner.sched().running.get(&id).cloned();
                match control {
                    Some(c) => {
                        c.cancel.cancel();
                        Ok(run)
                    }
                    None => Err(EngineError::InvalidState {
                        run_id: id,
                        detail: "run is executing on another worker".into(),
                    }),
                }
            }
            RunStatus::Pending | RunStatus::Paused => {
                // Not executing: end it here. A claim racing with this sees CANCELED and stops.
                crate::engine::driver::cancel_idle_run(&self.inner, run).await?;
                Ok(self.inner.store.get_run(id).await?)
            }
            status => Err(EngineError::InvalidState {
                run_id: id,
                detail: format!("cannot cancel a run that is {status}"),
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CreateRun;
    use crate::impls::{GitCli, MemoryStore, SimulatedAgent};
    use crate::testing::GitFixture;

    /// A repository with a one-task plan and an engine driving it with the simulated agent.
    fn engine_on_fixture() -> (GitFixture, Engine) {
        let repo = GitFixture::new();
        let global = repo.root().join("global-logs");
        repo.write_file(
            ".loop/config",
            &format!(
                "run_naming_mode=spec_slug\nreviewer=false\nglobal_log_dir={}\n",
                global.display()
            ),
        );
        repo.write_file("specs/widget.md", "# Widget\n\nBuild it.\n");
        repo.write_file("specs/planning/widget-plan.md", "# Plan\n\n- [ ] Task 1\n");
        repo.write_file(".gitignore", "logs/\n");
        repo.commit_all("spec and plan");
        let engine = Engine::builder()
            .store(MemoryStore::new())
            .executor(SimulatedAgent::new())
            .vcs(GitCli::with_env(repo.env()))
            .settings(EngineSettings {
                worker_id: "test-worker".into(),
                max_concurrency: 3,
                ..EngineSettings::default()
            })
            .build()
            .unwrap();
        (repo, engine)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_runs_leave_no_per_run_state_behind() {
        let (repo, engine) = engine_on_fixture();
        let mut ids = Vec::new();
        for _ in 0..6 {
            let created = engine
                .create_run(CreateRun {
                    workspace_root: repo.path().to_path_buf(),
                    spec_path: "specs/widget.md".into(),
                    ..CreateRun::default()
                })
                .await
                .unwrap();
            ids.push(created.run.id);
        }
        // Someone follows a run while it executes, and leaves before it ends.
        let follower = engine.subscribe_events(ids[0]);
        let output_follower = engine.subscribe_output(ids[1]);
        tokio::time::timeout(Duration::from_secs(120), engine.run_until_idle())
            .await
            .unwrap()
            .unwrap();
        drop((follower, output_follower));
        // Followers of finished runs come and go.
        for id in &ids {
            let run = engine.wait(*id).await.unwrap();
            assert!(run.status.is_terminal(), "{:?}", run.status);
        }
        assert_eq!(
            engine.inner.hub.len(),
            0,
            "channels of finished runs remain"
        );
        assert!(engine.running_runs().is_empty());
        assert!(
            engine.inner.prep_locks.lock().await.is_empty(),
            "preparation locks of idle workspaces remain"
        );
    }

    #[tokio::test]
    async fn prep_locks_in_use_are_kept_and_idle_ones_forgotten() {
        let (_repo, engine) = engine_on_fixture();
        let inner = &engine.inner;
        let (a, b) = (std::path::Path::new("/ws/a"), std::path::Path::new("/ws/b"));
        let held = inner.prep_lock(a).await;
        let guard = held.lock().await;
        drop(inner.prep_lock(b).await);
        // `b` is unused and goes; `a` is held, and a second caller gets the same lock.
        let again = inner.prep_lock(a).await;
        assert!(Arc::ptr_eq(&held, &again));
        assert!(again.try_lock().is_err(), "a is still locked");
        assert_eq!(inner.prep_locks.lock().await.len(), 1);
        drop(guard);
        drop((held, again));
        inner.forget_unused_prep_locks().await;
        assert!(inner.prep_locks.lock().await.is_empty());
    }
}
