//! Giving freed heap back to the OS once the daemon has gone quiet.
//!
//! Bursts of work (a thousand runs, a page of a thousand runs for `loopctl list`) allocate
//! tens of MiB that are freed again right after; glibc keeps most of it, because the freed
//! chunks sit between live ones in each thread's arena and only the top of an arena is ever
//! returned. Measured with the simulated agent: after 1,000 runs and one 1,000-run list page,
//! malloc held 32 MiB of which 6 MiB were live, and `malloc_trim(0)` took the RSS from 41 to
//! 19 MiB. So once the work stops, the daemon trims once.
//!
//! "The work stopped" is seen from the runtime: every wake-up of a tokio worker marks
//! activity (one relaxed store), and a small thread trims after a whole quiet period with no
//! wake-up. It sleeps on a condition variable while nothing happens, so an idle daemon is
//! never woken by it; after activity it wakes once per quiet period until the activity ends,
//! then trims once and sleeps again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long the runtime must stay quiet before the heap is trimmed.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// Activity flag shared by the runtime's hooks and the trimming thread.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    /// Set by every worker wake-up; cleared by the trimming thread when it looks.
    active: AtomicBool,
    /// True while the trimming thread sleeps without a deadline (it then needs a notify).
    asleep: Mutex<bool>,
    wake: Condvar,
}

impl Trimmer {
    /// Records activity: called when a runtime worker wakes up, so it must be cheap. Only the
    /// first wake-up after a quiet period takes the lock to wake the trimming thread.
    pub(crate) fn activity(&self) {
        if self.active.swap(true, Ordering::Relaxed) {
            return;
        }
        let asleep = self.asleep.lock().unwrap_or_else(|p| p.into_inner());
        if *asleep {
            self.wake.notify_one();
        }
    }

    /// Blocks until activity was recorded (without a deadline: an idle daemon is not woken).
    fn wait_for_activity(&self) {
        let mut asleep = self.asleep.lock().unwrap_or_else(|p| p.into_inner());
        *asleep = true;
        // Checked under the lock `activity` takes before notifying: no wake-up is lost.
        while !self.active.load(Ordering::Relaxed) {
            asleep = self.wake.wait(asleep).unwrap_or_else(|p| p.into_inner());
        }
        *asleep = false;
    }

    /// Blocks until a whole `quiet` period passed without activity.
    fn wait_for_quiet(&self, quiet: Duration) {
        while self.active.swap(false, Ordering::Relaxed) {
            std::thread::sleep(quiet);
        }
    }

    /// The trimming thread's loop: wait for activity, then for quiet, then `trim`; forever.
    fn serve(&self, quiet: Duration, mut trim: impl FnMut()) {
        loop {
            self.wait_for_activity();
            self.wait_for_quiet(quiet);
            trim();
        }
    }

    /// Starts the trimming thread with `trim` as the action. The thread ends with the process.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        quiet: Duration,
        trim: impl FnMut() + Send + 'static,
    ) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(move || me.serve(quiet, trim))
            .map(drop)
    }
}

/// Returns the free memory of every malloc arena to the OS; a no-op where the C library is
/// not glibc.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc_trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "malloc_trim is glibc's C API; it takes no pointers and is thread-safe"
)]
fn glibc_trim() {
    // SAFETY: malloc_trim only reads its integer argument and locks each arena itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    const QUICK: Duration = Duration::from_millis(50);

    fn trims_after(trimmer: &Arc<Trimmer>) -> Arc<AtomicUsize> {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        trimmer
            .spawn(QUICK, move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        count
    }

    fn wait_for(count: &AtomicUsize, n: usize) {
        let started = Instant::now();
        while count.load(Ordering::SeqCst) < n {
            assert!(started.elapsed() < Duration::from_secs(10), "no trim");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn no_trim_without_activity() {
        let trimmer = Arc::new(Trimmer::default());
        let count = trims_after(&trimmer);
        std::thread::sleep(QUICK * 6);
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn one_trim_per_burst_after_it_ends() {
        let trimmer = Arc::new(Trimmer::default());
        let count = trims_after(&trimmer);
        // A burst longer than the quiet period: no trim while it lasts.
        let started = Instant::now();
        while started.elapsed() < QUICK * 6 {
            trimmer.activity();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(count.load(Ordering::SeqCst), 0, "trimmed during the burst");
        wait_for(&count, 1);
        // Quiet afterwards: exactly one trim.
        std::thread::sleep(QUICK * 6);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // The next burst trims again.
        trimmer.activity();
        wait_for(&count, 2);
        std::thread::sleep(QUICK * 4);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    /// `RssAnon` of this process in KiB.
    fn rss_anon_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_returns_freed_heap_that_malloc_keeps() {
        // 64 MiB in 16 KiB blocks, each followed by a small block that stays live: once the
        // big ones are freed they are holes between live chunks, which malloc keeps.
        let mut blocks = Vec::with_capacity(4096);
        let mut pins = Vec::with_capacity(4096);
        for i in 0..4096 {
            blocks.push(vec![i as u8; 16 * 1024]);
            pins.push(vec![i as u8; 32]);
        }
        drop(std::hint::black_box(blocks));
        let before = rss_anon_kib();
        release_free_heap();
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) > 32 * 1024,
            "RssAnon {before} kB before the trim, {after} kB after"
        );
        drop(std::hint::black_box(pins));
    }
}
