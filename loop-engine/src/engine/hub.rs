//! Live fan-out of a run's events and agent output to followers (SSE clients, embedders).
//! Channels are bounded broadcasts: a follower that falls behind is told it lagged and must
//! resume from the store, so a slow client never makes the engine buffer without bound.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::backend::OutputStream;
use crate::domain::{Event, RunId, StepId};

/// Capacity of a run's event channel.
const EVENT_CAPACITY: usize = 1024;
/// Capacity of a run's output channel (chunks, not bytes).
const OUTPUT_CAPACITY: usize = 1024;

/// A piece of live agent output with its position in the step's log file.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveOutput {
    /// The step that printed it.
    pub step_id: StepId,
    /// Byte offset of `data` in the step's log file.
    pub offset: u64,
    /// Which stream.
    pub stream: OutputStream,
    /// The bytes.
    pub data: Bytes,
}

/// The step whose output is live right now.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentOutput {
    /// The step.
    pub step_id: StepId,
    /// Its log file (complete up to the bytes already broadcast).
    pub log_path: PathBuf,
}

struct RunChannels {
    events: broadcast::Sender<Event>,
    output: broadcast::Sender<LiveOutput>,
    current: Option<CurrentOutput>,
}

impl RunChannels {
    fn new() -> Self {
        Self {
            events: broadcast::channel(EVENT_CAPACITY).0,
            output: broadcast::channel(OUTPUT_CAPACITY).0,
            current: None,
        }
    }
}

/// Per-run broadcast channels, created on first use and dropped when the run ends.
#[derive(Default)]
pub(crate) struct Hub {
    runs: Mutex<HashMap<RunId, RunChannels>>,
}

impl Hub {
    fn with<T>(&self, run_id: RunId, f: impl FnOnce(&mut RunChannels) -> T) -> T {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        f(runs.entry(run_id).or_insert_with(RunChannels::new))
    }

    pub(crate) fn publish_event(&self, event: &Event) {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = runs.get(&event.run_id) {
            // No receivers is normal: nobody follows this run.
            let _ = ch.events.send(event.clone());
        }
    }

    pub(crate) fn subscribe_events(&self, run_id: RunId) -> broadcast::Receiver<Event> {
        self.with(run_id, |ch| ch.events.subscribe())
    }

    pub(crate) fn output_sender(&self, run_id: RunId) -> broadcast::Sender<LiveOutput> {
        self.with(run_id, |ch| ch.output.clone())
    }

    pub(crate) fn set_current_output(&self, run_id: RunId, current: Option<CurrentOutput>) {
        self.with(run_id, |ch| ch.current = current);
    }

    pub(crate) fn subscribe_output(
        &self,
        run_id: RunId,
    ) -> (broadcast::Receiver<LiveOutput>, Option<CurrentOutput>) {
        self.with(run_id, |ch| (ch.output.subscribe(), ch.current.clone()))
    }

    /// Drops a finished run's channels (followers see the channel close), and every other
    /// entry nobody listens to: a follower that subscribed to an already finished run must
    /// not leave its entry behind forever.
    pub(crate) fn close(&self, run_id: RunId) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.remove(&run_id);
        runs.retain(|_, ch| {
            ch.events.receiver_count() > 0 || ch.output.receiver_count() > 0 || ch.current.is_some()
        });
    }

    /// Number of runs with channels (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_run_also_drops_entries_nobody_listens_to() {
        let hub = Hub::default();
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        let _rx_a = hub.subscribe_events(a);
        drop(hub.subscribe_events(b));
        let rx_c = hub.subscribe_events(c);
        assert_eq!(hub.len(), 3);
        hub.close(c);
        assert_eq!(hub.len(), 1, "b had no listener, c was closed");
        drop(rx_c);
    }
}
