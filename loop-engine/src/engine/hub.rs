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

    /// True while someone listens, or a step's output is live (the driver then holds a
    /// sender of this very channel, so it must not be replaced by a fresh one).
    fn in_use(&self) -> bool {
        self.events.receiver_count() > 0
            || self.output.receiver_count() > 0
            || self.current.is_some()
    }
}

/// Per-run broadcast channels, created on first use and dropped when the run ends or, for a
/// run that is not executing, once nobody listens any more. Each entry preallocates both
/// channels (a few hundred KiB), so none may outlive its use: the map holds the executing
/// runs that have followers or live output, and nothing for finished runs.
#[derive(Default)]
pub(crate) struct Hub {
    runs: Mutex<HashMap<RunId, RunChannels>>,
}

impl Hub {
    fn with<T>(&self, run_id: RunId, f: impl FnOnce(&mut RunChannels) -> T) -> T {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !runs.contains_key(&run_id) {
            // Before adding an entry, drop those nobody uses any more: a follower of a run that
            // has already finished (an SSE client, `wait`) leaves its entry behind when it goes,
            // and no `close` is coming for that run.
            runs.retain(|_, ch| ch.in_use());
        }
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
        runs.retain(|_, ch| ch.in_use());
    }

    /// Drops a run's channels if nobody uses them: for a follower that is done with a run
    /// which may already have finished.
    pub(crate) fn release(&self, run_id: RunId) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.get(&run_id).is_some_and(|ch| !ch.in_use()) {
            runs.remove(&run_id);
        }
    }

    /// The runs whose events someone follows right now.
    pub(crate) fn followed(&self) -> Vec<RunId> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter()
            .filter(|(_, ch)| ch.events.receiver_count() > 0)
            .map(|(id, _)| *id)
            .collect()
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
        assert_eq!(hub.len(), 2);
        hub.close(c);
        assert_eq!(hub.len(), 1, "b had no listener");
        let rx_c = hub.subscribe_events(c);
        hub.close(c);
        assert_eq!(hub.len(), 1, "c was closed although followed");
        drop(rx_c);
    }

    #[test]
    fn followers_of_finished_runs_leave_nothing_behind() {
        let hub = Hub::default();
        let live = RunId::new();
        // A step's output is live: its entry stays even without listeners.
        hub.set_current_output(
            live,
            Some(CurrentOutput {
                step_id: StepId::new(),
                log_path: PathBuf::from("iter-01.log"),
            }),
        );
        let sender = hub.output_sender(live);
        // Followers of 100 finished runs come and go; no close ever comes for those runs.
        for _ in 0..100 {
            let finished = RunId::new();
            let rx = hub.subscribe_events(finished);
            let (out_rx, current) = hub.subscribe_output(finished);
            assert_eq!(current, None);
            drop((rx, out_rx));
        }
        assert!(hub.len() <= 2, "{} entries left behind", hub.len());
        let last = RunId::new();
        drop(hub.subscribe_events(last));
        hub.release(last);
        assert_eq!(hub.len(), 1, "only the run with live output is left");
        // The live run kept its channel: a new follower hears the driver's sender.
        let (mut out_rx, current) = hub.subscribe_output(live);
        assert!(current.is_some());
        let chunk = LiveOutput {
            step_id: StepId::new(),
            offset: 0,
            stream: OutputStream::Stdout,
            data: Bytes::from_static(b"hello"),
        };
        sender.send(chunk.clone()).unwrap();
        assert_eq!(out_rx.try_recv().unwrap(), chunk);
        // `release` leaves an entry alone while someone listens.
        hub.release(live);
        assert_eq!(hub.len(), 1);
    }
}
