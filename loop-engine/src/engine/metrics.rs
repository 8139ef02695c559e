//! Counters of SPEC §11 kept in memory by the engine; the HTTP layer renders them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A sum and a count, enough for an average and a Prometheus summary.
#[derive(Debug, Default)]
pub(crate) struct Timing {
    sum_ms: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    pub(crate) fn record(&self, ms: u64) {
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TimingSnapshot {
        TimingSnapshot {
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Live counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) run_duration: Timing,
    pub(crate) iteration_duration: Timing,
    pub(crate) verification_pass: AtomicU64,
    pub(crate) verification_fail: AtomicU64,
    pub(crate) watchdog_rewrites: AtomicU64,
    pub(crate) claude_retries: AtomicU64,
    pub(crate) fenced_writes_rejected: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            run_duration: self.run_duration.snapshot(),
            iteration_duration: self.iteration_duration.snapshot(),
            verification_pass: self.verification_pass.load(Ordering::Relaxed),
            verification_fail: self.verification_fail.load(Ordering::Relaxed),
            watchdog_rewrites: self.watchdog_rewrites.load(Ordering::Relaxed),
            claude_retries: self.claude_retries.load(Ordering::Relaxed),
            fenced_writes_rejected: self.fenced_writes_rejected.load(Ordering::Relaxed),
            leases_lost: self.leases_lost.load(Ordering::Relaxed),
        }
    }
}

/// Sum and count of a duration metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TimingSnapshot {
    /// Sum of all observations, in milliseconds.
    pub sum_ms: u64,
    /// Number of observations.
    pub count: u64,
}

/// A copy of the engine's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// `run_duration_ms` of finished runs.
    pub run_duration: TimingSnapshot,
    /// `iteration_duration_ms` of agent steps.
    pub iteration_duration: TimingSnapshot,
    /// Verifications that passed.
    pub verification_pass: u64,
    /// Verifications that failed.
    pub verification_fail: u64,
    /// Watchdog prompt rewrites.
    pub watchdog_rewrites: u64,
    /// Agent step retries.
    pub claude_retries: u64,
    /// Writes of this worker the store refused because another worker had taken their run
    /// over (fencing, SPEC §14): fenced batches and lease renewals.
    pub fenced_writes_rejected: u64,
    /// Runs this worker stopped because it lost their lease (taken over, or not renewable
    /// in time).
    pub leases_lost: u64,
}
