//! The engine's shared state: engine-wide settings, the backends, the scheduler's table of
//! executing runs and their switches, the live hub, the notifications, the postmortems under
//! way and the per-workspace preparation locks.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::{Executor, Notifier, QueueOrder, Store, Vcs};
use crate::config::{Config, ExecutorKind};
use crate::domain::{Event, NewEvent, RunId};
use crate::engine::hub::Hub;
use crate::engine::metrics::Metrics;
use crate::engine::notify::Notifications;
use crate::impls::{ClaudeExecutor, CommandExecutor};

/// Engine-wide settings (the daemon's, not a run's).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// This worker's id, stored on the runs it leases (`worker_id`). Unique among the
    /// workers sharing a store: loopd uses host, pid and start time.
    pub worker_id: String,
    /// Ids of earlier processes of this same worker that are known to be dead (loopd: the
    /// previous daemon on its data dir, whose lock it now holds). Their runs are recovered
    /// at start instead of waiting for their leases to expire.
    pub previous_worker_ids: Vec<String>,
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
            previous_worker_ids: Vec::new(),
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
    /// Runs whose postmortem is under way (one at a time per run).
    pub(crate) postmortems: Mutex<HashSet<RunId>>,
    /// The built-in notifiers of the runs' configs, fed with every published event.
    pub(crate) notifications: Notifications,
}

impl Inner {
    pub(crate) fn sched(&self) -> std::sync::MutexGuard<'_, SchedState> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runs whose postmortem is under way.
    pub(crate) fn postmortems(&self) -> std::sync::MutexGuard<'_, HashSet<RunId>> {
        self.postmortems.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor for a run: the injected one, else the one its config names.
    pub(crate) fn executor_for(&self, cfg: &Config) -> Result<Arc<dyn Executor>, String> {
        if let Some(e) = &self.executor {
            return Ok(e.clone());
        }
        match cfg.executor {
            ExecutorKind::Claude => Ok(Arc::new(ClaudeExecutor::new(cfg.claude_bin.clone()))),
            ExecutorKind::Codex => crate::impls::CodexExecutor::new(
                cfg.codex_bin.clone(),
                cfg.codex_model.clone(),
                cfg.codex_args.as_deref(),
            )
            .map(|e| Arc::new(e) as Arc<dyn Executor>),
            ExecutorKind::Gemini => crate::impls::GeminiExecutor::new(
                cfg.gemini_bin.clone(),
                cfg.gemini_model.clone(),
                cfg.gemini_args.as_deref(),
            )
            .map(|e| Arc::new(e) as Arc<dyn Executor>),
            ExecutorKind::Simulate => Ok(Arc::new(crate::impls::SimulatedAgent::new())),
            ExecutorKind::Command => {
                let template = cfg.agent_cmd.as_deref().unwrap_or_default();
                CommandExecutor::new(template)
                    .map(|e| Arc::new(e) as Arc<dyn Executor>)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Appends an event to the store and publishes it to followers.
    pub(crate) async fn emit(&self, event: NewEvent) -> Result<Event, crate::backend::StoreError> {
        let stored = self.store.append_event(&event).await?;
        self.published(&stored);
        Ok(stored)
    }

    /// A stored event goes out: to followers, and to the run's notifiers when it concerns a
    /// person (neither waits).
    pub(crate) fn published(&self, event: &Event) {
        self.hub.publish_event(event);
        self.notifications.offer(event);
    }

    /// An event another host appended to a run that does not execute here: read from the
    /// store and handed to this host's followers of the run, if any (the owner host sends
    /// the notifications; followers fill any gap from the store themselves).
    pub(crate) async fn relay_remote_event(&self, run_id: crate::domain::RunId, seq: u64) {
        if self.sched().running.contains_key(&run_id) || !self.hub.followed().contains(&run_id) {
            return;
        }
        match self
            .store
            .events_after(run_id, seq.saturating_sub(1), 1)
            .await
        {
            Ok(events) => {
                for event in &events {
                    self.hub.publish_event(event);
                }
            }
            Err(e) => {
                tracing::debug!(%run_id, error = %crate::error::chain(&e), "cannot read an event announced by the store");
            }
        }
    }

    /// After announcements may have been lost: every followed run that executes elsewhere
    /// gets its last stored event re-published, which makes its followers re-read the store
    /// from where they are.
    pub(crate) async fn resync_remote_followers(&self) {
        let followed = self.hub.followed();
        for run_id in followed {
            if self.sched().running.contains_key(&run_id) {
                continue;
            }
            if let Ok(seq) = self.store.last_event_seq(run_id).await
                && seq > 0
            {
                self.relay_remote_event(run_id, seq).await;
            }
        }
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
