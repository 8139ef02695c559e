//! `PgStore` against a real PostgreSQL server: the store contract suite (the very suite the
//! memory and SQLite stores pass), gap-free events under concurrent writers through several
//! stores (as several hosts would), claims across stores, fencing, and the change feed.
//!
//! The server comes from `LOOP_TEST_POSTGRES_URL` (`.ci/run` starts a private cluster with
//! `bin/pg-test-cluster`); each test works in a fresh database of its own. Without the
//! variable the tests say why and pass, unless `LOOP_REQUIRE_POSTGRES=1`.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use loop_engine::Store;
use loop_engine::backend::{ClaimRequest, QueueOrder, StoreChange, StoreError, StoreWrite};
use loop_engine::domain::RunStatus;
use loop_engine::testing::store_contract;
use loop_store::{PgStore, create_scratch_database};

/// A URL of a fresh database, or `None` (after saying why) when no server is configured.
async fn database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("LOOP_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("LOOP_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "{test}: LOOP_REQUIRE_POSTGRES=1 but LOOP_TEST_POSTGRES_URL is not set"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: LOOP_TEST_POSTGRES_URL is not set (bin/pg-test-cluster starts a server)"
        );
        return None;
    };
    Some(
        create_scratch_database(&admin)
            .await
            .expect("create a scratch database"),
    )
}

async fn connect(url: &str) -> PgStore {
    PgStore::connect(url).await.expect("connect to postgres")
}

#[tokio::test]
async fn postgres_store_satisfies_the_store_contract() {
    let Some(url) = database("postgres_store_satisfies_the_store_contract").await else {
        return;
    };
    let store = connect(&url).await;
    store_contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_appends_are_gap_free() {
    let Some(url) = database("postgres_concurrent_appends_are_gap_free").await else {
        return;
    };
    store_contract::concurrent_appends(Arc::new(connect(&url).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_batches_are_gap_free() {
    let Some(url) = database("postgres_concurrent_batches_are_gap_free").await else {
        return;
    };
    store_contract::concurrent_batches(Arc::new(connect(&url).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_claims_never_share_a_run() {
    let Some(url) = database("postgres_concurrent_claims_never_share_a_run").await else {
        return;
    };
    store_contract::concurrent_claims(Arc::new(connect(&url).await)).await;
}

/// Three stores (three hosts) append to one run at once: every event gets its own number,
/// 1..=n without a gap, and what each store was told matches what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_through_several_stores_are_gap_free() {
    let Some(url) = database("appends_through_several_stores_are_gap_free").await else {
        return;
    };
    let stores = [
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    ];
    let run = store_contract::sample_run("/ws/three-hosts");
    stores[0].create_run(&run).await.expect("create");
    let mut tasks = Vec::new();
    for (host, store) in stores.iter().enumerate() {
        for task in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25u64 {
                    let n = (host as u64) * 10_000 + task * 100 + i;
                    let event = store_contract::sample_event(run.id, n);
                    let appended = if i % 5 == 0 {
                        let out = store
                            .write_batch(&[
                                StoreWrite::AppendEvent(event.clone()),
                                StoreWrite::AppendEvent(event),
                            ])
                            .await
                            .expect("batch");
                        out.events.into_iter().map(|e| e.seq).collect::<Vec<_>>()
                    } else {
                        vec![store.append_event(&event).await.expect("append").seq]
                    };
                    seqs.extend(appended);
                }
                seqs
            }));
        }
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("append task"));
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "two appends got the same number");
    let n = all.len() as u64;
    assert_eq!(unique, (1..=n).collect(), "the numbers have a gap");
    let stored = stores[1]
        .events_after(run.id, 0, 10_000)
        .await
        .expect("read");
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
}

/// Claimers on three stores never get the same run, and a stale holder's fenced batch is
/// refused once another store claimed the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_across_stores_are_exclusive_and_fenced() {
    let Some(url) = database("claims_across_stores_are_exclusive_and_fenced").await else {
        return;
    };
    let stores = [
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    ];
    let mut created = BTreeSet::new();
    for _ in 0..30 {
        let run = store_contract::sample_run("/ws/claims");
        stores[0].create_run(&run).await.expect("create");
        created.insert(run.id);
    }
    let mut tasks = Vec::new();
    for (host, store) in stores.iter().enumerate() {
        for worker in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let req = ClaimRequest {
                        worker_id: format!("host-{host}-{worker}"),
                        now: 1_000,
                        lease_ms: 1_000,
                        order: QueueOrder::Fifo,
                        skip_workspaces: Vec::new(),
                        skip_runs: Vec::new(),
                    };
                    match store.claim_next_run(&req).await.expect("claim") {
                        Some(run) => mine.push(run),
                        None => return mine,
                    }
                }
            }));
        }
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("claim task"));
    }
    let ids: BTreeSet<_> = claimed.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), claimed.len(), "a run was claimed twice");
    assert_eq!(ids, created);

    // Take one over after its lease expired: the old holder's fenced writes bounce.
    let old = claimed[0].clone();
    let req = ClaimRequest {
        worker_id: "taker".into(),
        now: 5_000,
        lease_ms: 1_000,
        order: QueueOrder::Fifo,
        skip_workspaces: Vec::new(),
        skip_runs: Vec::new(),
    };
    let taken = stores[2]
        .claim_next_run(&req)
        .await
        .expect("claim")
        .expect("an expired lease is claimable");
    assert!(taken.lease_epoch > 0);
    let stale = stores[0]
        .write_batch(&[
            StoreWrite::Fence {
                run_id: taken.id,
                epoch: taken.lease_epoch - 1,
            },
            StoreWrite::AppendEvent(store_contract::sample_event(taken.id, 1)),
        ])
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "a stale epoch must be refused: {stale:?}"
    );
    assert_eq!(stores[1].last_event_seq(taken.id).await.expect("seq"), 0);
    let _ = old;
}

/// Another store's new run, status change and event reach this store's change feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_other_stores_are_announced() {
    let Some(url) = database("changes_of_other_stores_are_announced").await else {
        return;
    };
    let listener = connect(&url).await;
    let writer = connect(&url).await;
    let mut feed = listener.changes().expect("postgres has a change feed");
    let mut run = store_contract::sample_run("/ws/feed");
    writer.create_run(&run).await.expect("create");
    writer
        .append_event(&store_contract::sample_event(run.id, 1))
        .await
        .expect("append");
    run.status = RunStatus::Paused;
    writer.update_run(&run).await.expect("update");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let change = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a change within 10 s")
            .expect("feed open");
        seen.push(change);
    }
    assert_eq!(
        seen,
        vec![
            StoreChange::Run {
                run_id: run.id,
                status: RunStatus::Pending
            },
            StoreChange::Event {
                run_id: run.id,
                seq: 1
            },
            StoreChange::Run {
                run_id: run.id,
                status: RunStatus::Paused
            },
        ]
    );
}

/// A workspace's `max_runs_per_workspace` holds across hosts: claimers on three stores racing
/// for ten runs of one workspace with a cap of 2 get exactly two of them, and a third once a
/// lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_workspace_cap_holds_across_stores() {
    let Some(url) = database("the_workspace_cap_holds_across_stores").await else {
        return;
    };
    let stores = [
        connect(&url).await,
        connect(&url).await,
        connect(&url).await,
    ];
    for _ in 0..10 {
        let mut run = store_contract::sample_run("/ws/capped");
        run.config = serde_json::json!({ "max_runs_per_workspace": 2 });
        stores[0].create_run(&run).await.expect("create");
    }
    let request = |worker: String, now: i64| ClaimRequest {
        worker_id: worker,
        now,
        lease_ms: 1_000,
        order: QueueOrder::Fifo,
        skip_workspaces: Vec::new(),
        skip_runs: Vec::new(),
    };
    let mut tasks = Vec::new();
    for (host, store) in stores.iter().enumerate() {
        for worker in 0..3 {
            let store = store.clone();
            let req = request(format!("host-{host}-{worker}"), 1_000);
            tasks.push(tokio::spawn(async move {
                let mut mine = 0;
                while store.claim_next_run(&req).await.expect("claim").is_some() {
                    mine += 1;
                }
                mine
            }));
        }
    }
    let mut claimed = 0;
    for task in tasks {
        claimed += task.await.expect("claim task");
    }
    assert_eq!(claimed, 2, "the cap of 2 runs per workspace was not held");
    // Once those leases lapse, their runs and the queued ones compete again: two at a time.
    let later = request("late".into(), 2_000);
    assert!(
        stores[1]
            .claim_next_run(&later)
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        stores[2]
            .claim_next_run(&later)
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        stores[0]
            .claim_next_run(&later)
            .await
            .expect("claim")
            .is_none()
    );
}
