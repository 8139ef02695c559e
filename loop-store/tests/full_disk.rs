//! A real full filesystem under a `SqliteStore`: the database lives on a small tmpfs that a
//! filler file fills up. Writes that need more room fail with the disk's error, and once the
//! filler is gone the same store writes again (the writer connection is not left inside a
//! dead transaction), and its health check says so while full and after.
//!
//! Mounting needs root (these machines run the tests as root); elsewhere the test prints why
//! it skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

use loop_engine::Store;
use loop_engine::backend::{StoreError, StoreWrite};
use loop_engine::domain::{EventKind, NewEvent};
use loop_engine::testing::store_contract;
use loop_store::SqliteStore;

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"8m"`), or says why it cannot.
    async fn mount(size: &str) -> Result<Self, String> {
        if !is_root() {
            return Err("not running as root, cannot mount a tmpfs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let out = loop_engine::process::Cmd::new("mount", "/")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .timeout(Some(std::time::Duration::from_secs(30)))
            .output()
            .await
            .map_err(|e| format!("run mount: {e}"))?;
        if !out.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                out.stderr_text().trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A drop cannot await; a lazy unmount returns at once.
        let mut umount = loop_engine::process::Cmd::new("umount", "/")
            .arg("-l")
            .arg(self.dir.path())
            .to_tokio();
        let _ = umount.as_std_mut().status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    // Whatever fits in less than a chunk.
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
}

fn big_event(run: &loop_engine::domain::Run, bytes: usize) -> NewEvent {
    NewEvent::new(
        run.id,
        EventKind::Heartbeat,
        serde_json::json!({ "text": "x".repeat(bytes) }),
    )
}

fn chain(err: &StoreError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_then_the_store_writes_again() {
    let fs = match Tmpfs::mount("8m").await {
        Ok(fs) => fs,
        Err(reason) => {
            // Straight to stderr: the harness captures eprintln! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a_full_disk_fails_writes_then_the_store_writes_again: {reason}"
            );
            return;
        }
    };
    let db: PathBuf = fs.path().join("loop.db");
    let store = SqliteStore::open(&db).await.expect("open the store");
    let run = store_contract::sample_run("/ws/full-disk");
    store.create_run(&run).await.expect("create the run");
    store
        .append_event(&big_event(&run, 100))
        .await
        .expect("an event before the disk is full");
    store.check_health().await.expect("healthy before");

    let filler = fs.path().join("filler");
    fill(&filler);
    // Batches (one transaction each) and single appends that need room fail with the disk's
    // error, again and again.
    let mut batch_failures = 0;
    let mut append_failures = 0;
    for _ in 0..6 {
        let batch = vec![
            StoreWrite::AppendEvent(big_event(&run, 2 * 1024 * 1024)),
            StoreWrite::UpdateRun(run.clone()),
        ];
        if let Err(e) = store.write_batch(&batch).await {
            let text = chain(&e);
            assert!(
                !text.contains("transaction depth"),
                "a failed write wedged the connection: {text}"
            );
            batch_failures += 1;
        }
        if let Err(e) = store.append_event(&big_event(&run, 2 * 1024 * 1024)).await {
            let text = chain(&e);
            assert!(!text.contains("transaction depth"), "{text}");
            append_failures += 1;
        }
    }
    assert!(batch_failures > 0, "the full disk never failed a batch");
    assert!(append_failures > 0, "the full disk never failed an append");
    let health = store
        .check_health()
        .await
        .expect_err("a store on a full disk is not healthy");
    eprintln!("health while full: {}", chain(&health));

    std::fs::remove_file(&filler).expect("remove the filler");
    // The store writes again: a batch, a claim (its own transaction), a single append.
    let outcome = store
        .write_batch(&[
            StoreWrite::AppendEvent(big_event(&run, 1000)),
            StoreWrite::UpdateRun(run.clone()),
        ])
        .await
        .expect("a batch after the disk has room again");
    assert_eq!(outcome.events.len(), 1);
    store
        .append_event(&big_event(&run, 1000))
        .await
        .expect("an append after the disk has room again");
    let other = store_contract::sample_run("/ws/full-disk-2");
    store
        .create_run(&other)
        .await
        .expect("a new run after the disk has room again");
    store.check_health().await.expect("healthy again");
    // What was stored before the outage is all there, gap-free.
    let events = store.events_after(run.id, 0, 1000).await.expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    store.close().await;
}
