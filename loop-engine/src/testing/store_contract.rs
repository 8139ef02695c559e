//! The store contract suite: one async function per behaviour of the [`Store`] contract, each
//! taking the store under test and panicking with a message that names the broken rule.
//!
//! Every implementation runs the same suite ([`run_all`], [`concurrent_appends`],
//! [`concurrent_batches`], [`concurrent_claims`]), so the in-memory store cannot drift from the SQLite one and a new
//! backend knows exactly what it has to do.
//!
//! The functions can share one store: each works in its own workspace, compares counts before
//! and after, and the claiming checks first drain the queue (claiming whatever earlier checks
//! left claimable with a lease that never expires at the times the checks use).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use crate::backend::{
    BatchOutcome, ClaimRequest, QueueOrder, RunFilter, Store, StoreError, StoreWrite,
};
use crate::domain::{
    AgentResources, AgentUsage, ArtifactKind, ArtifactLocation, Event, EventKind, ExitReason,
    MergeStrategy, NameSource, NewArtifact, NewEvent, Run, RunId, RunStatus, Step, StepId,
    StepPhase, StepStatus, UnixMs, now_ms,
};

/// A clock value for claiming checks; leases are relative to it, not to the wall clock.
const T0: UnixMs = 1_700_000_000_000;

/// The clock and lease used to drain the queue: any lease a check sets is earlier than
/// `DRAIN_NOW`, and the drained runs hold leases that no check's clock ever reaches.
const DRAIN_NOW: UnixMs = 1 << 60;

/// A `PENDING` run in `workspace` with every optional field empty, created now.
pub fn sample_run(workspace: &str) -> Run {
    let workspace = PathBuf::from(workspace);
    let now = now_ms();
    Run {
        id: RunId::new(),
        name: "sample-run".to_owned(),
        name_source: NameSource::SpecSlug,
        status: RunStatus::Pending,
        exit_reason: None,
        failure: None,
        spec_path: workspace.join("SPEC.md"),
        plan_path: workspace.join("PLAN.md"),
        worktree_path: workspace.join("../wt/sample-run"),
        workspace_root: workspace,
        base_branch: "main".to_owned(),
        run_branch: "loop/sample-run".to_owned(),
        merge_target_branch: None,
        merge_strategy: MergeStrategy::Squash,
        config: json!({ "max_iterations": 10, "verify": ["cargo test"] }),
        iterations_run: 0,
        tasks_done: 0,
        tasks_total: 0,
        created_at: now,
        updated_at: now,
        worker_id: None,
        lease_expires_at: None,
        lease_epoch: 0,
        review_status: crate::domain::ReviewStatus::Pending,
        review_action_at: None,
        merge_commit: None,
        pr_url: None,
    }
}

/// A run in `workspace` with every optional field set and non-default values everywhere, to
/// catch columns a store forgets or mixes up.
pub fn full_run(workspace: &str) -> Run {
    Run {
        name: "full-run".to_owned(),
        name_source: NameSource::Haiku,
        status: RunStatus::Failed,
        exit_reason: Some(ExitReason::MaxConsecutiveFailures {
            kind: "verification".to_owned(),
            limit: 3,
        }),
        failure: Some("verification failed 3 times in a row".to_owned()),
        merge_target_branch: Some("integration".to_owned()),
        merge_strategy: MergeStrategy::Merge,
        config: json!({ "nested": { "list": [1, 2.5, "three", null, true] }, "text": "ü ✓" }),
        iterations_run: 7,
        tasks_done: 4,
        tasks_total: 9,
        worker_id: Some("worker-a".to_owned()),
        lease_expires_at: Some(T0 + 30_000),
        lease_epoch: 3,
        review_status: crate::domain::ReviewStatus::PrCreated,
        review_action_at: Some(T0 + 40_000),
        merge_commit: None,
        pr_url: Some("https://example.invalid/pr/7".to_owned()),
        ..sample_run(workspace)
    }
}

/// A `QUEUED` implementation step number `seq` of `run_id`, with every optional field empty.
pub fn sample_step(run_id: RunId, seq: u32) -> Step {
    Step {
        id: StepId::new(),
        run_id,
        seq,
        iteration: seq,
        label: seq.to_string(),
        phase: StepPhase::Implementation,
        status: StepStatus::Queued,
        attempt: 1,
        started_at: None,
        ended_at: None,
        exit_code: None,
        reason: None,
        prompt_path: None,
        output_path: None,
        head_before: None,
        head_after: None,
        agent_pid: None,
        agent_start_time: None,
        usage: None,
        resources: None,
    }
}

/// A finished step of `run_id` with every optional field set.
pub fn full_step(run_id: RunId, seq: u32) -> Step {
    Step {
        iteration: 3,
        label: "3R1A2".to_owned(),
        phase: StepPhase::Review,
        status: StepStatus::Failed,
        attempt: 2,
        started_at: Some(T0),
        ended_at: Some(T0 + 61_000),
        exit_code: Some(124),
        reason: Some("timeout".to_owned()),
        prompt_path: Some(PathBuf::from("/logs/run/prompt.txt")),
        output_path: Some(PathBuf::from("/logs/run/iter-3R1A2.log")),
        head_before: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        head_after: Some("89abcdef0123456789abcdef0123456789abcdef".to_owned()),
        agent_pid: Some(4_000_000),
        agent_start_time: Some(123_456_789_012),
        usage: Some(AgentUsage {
            num_turns: Some(12),
            input_tokens: Some(1_000),
            output_tokens: Some(2_000),
            cache_read_input_tokens: Some(30_000),
            cache_creation_input_tokens: None,
            cost_usd: Some(0.125),
            is_error: true,
            duration_api_ms: Some(59_000),
            model: Some("claude-opus-4-1".to_owned()),
        }),
        resources: Some(AgentResources {
            cpu_usec: 1_234_567,
            memory_peak_bytes: Some(64 << 20),
            pids_peak: Some(17),
            limit_hit: Some("agent_pids_max".to_owned()),
        }),
        ..sample_step(run_id, seq)
    }
}

/// A `HEARTBEAT` event of `run_id` whose payload carries `n`.
pub fn sample_event(run_id: RunId, n: u64) -> NewEvent {
    NewEvent {
        run_id,
        step_id: None,
        kind: EventKind::Heartbeat,
        ts: T0 + i64::try_from(n).unwrap_or(0),
        payload: json!({ "n": n }),
    }
}

/// An iteration log artifact of `run_id` at `path` in the workspace log dir.
pub fn sample_artifact(run_id: RunId, path: &str) -> NewArtifact {
    NewArtifact {
        run_id,
        kind: ArtifactKind::IterationLog,
        location: ArtifactLocation::Workspace,
        path: PathBuf::from(path),
        checksum: "0".repeat(64),
    }
}

/// Runs every check that takes a `&dyn Store`, in order, on one store.
pub async fn run_all(store: &dyn Store) {
    create_and_get_run(store).await;
    get_unknown_run_is_not_found(store).await;
    duplicate_create_is_conflict(store).await;
    update_run_replaces_fields_but_not_the_lease(store).await;
    list_runs_filters_and_orders_newest_first(store).await;
    steps_round_trip_in_seq_order(store).await;
    step_errors(store).await;
    events_are_numbered_per_run(store).await;
    events_after_returns_the_tail(store).await;
    event_errors(store).await;
    interleaved_appends(store).await;
    batch_applies_in_order(store).await;
    batch_is_atomic(store).await;
    empty_batch_is_a_no_op(store).await;
    interleaved_batches(store).await;
    artifacts_upsert_by_location_and_path(store).await;
    claim_takes_pending_and_sets_the_lease(store).await;
    claim_never_takes_paused_or_terminal_runs(store).await;
    claim_takes_over_expired_leases(store).await;
    claim_follows_the_queue_order(store).await;
    claim_honours_skips(store).await;
    interleaved_claims(store).await;
    renew_and_release(store).await;
    fenced_batches(store).await;
    count_runs_by_status(store).await;
}

fn workspace(tag: &str) -> String {
    format!("/contract/{tag}/{}", RunId::new())
}

#[track_caller]
fn assert_not_found<T: Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("store contract: {what} must be NotFound, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("store contract: {what} must be Conflict, got {other:?}"),
    }
}

#[track_caller]
fn ok<T>(what: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("store contract: {what} failed: {e:?}"),
    }
}

async fn create(store: &dyn Store, run: &Run) {
    ok("create_run", store.create_run(run).await);
}

/// A run reads back exactly as it was created, with every field (including the optional ones
/// and the lease columns given at creation).
pub async fn create_and_get_run(store: &dyn Store) {
    for run in [sample_run(&workspace("get")), full_run(&workspace("get"))] {
        create(store, &run).await;
        let stored = ok("get_run", store.get_run(run.id).await);
        assert_eq!(
            stored, run,
            "store contract: a run must read back as created"
        );
    }
}

/// Reading a run that does not exist is `NotFound`.
pub async fn get_unknown_run_is_not_found(store: &dyn Store) {
    assert_not_found(
        "get_run of an unknown id",
        store.get_run(RunId::new()).await,
    );
}

/// Creating a run with an existing id is `Conflict` and leaves the stored run alone.
pub async fn duplicate_create_is_conflict(store: &dyn Store) {
    let run = sample_run(&workspace("dup"));
    create(store, &run).await;
    let again = Run {
        name: "other-name".to_owned(),
        ..run.clone()
    };
    assert_conflict(
        "create_run with an existing id",
        store.create_run(&again).await,
    );
    let stored = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        stored, run,
        "store contract: a rejected create must not change the run"
    );
}

/// `update_run` replaces status, progress, exit reason and failure, bumps `updated_at`, and
/// keeps the lease columns and the creation time; it may be repeated; an unknown run is
/// `NotFound`.
pub async fn update_run_replaces_fields_but_not_the_lease(store: &dyn Store) {
    let mut run = sample_run(&workspace("update"));
    run.created_at -= 60_000;
    run.updated_at = run.created_at;
    run.worker_id = Some("holder".to_owned());
    run.lease_expires_at = Some(T0 + 5_000);
    run.lease_epoch = 4;
    create(store, &run).await;

    let before_update = now_ms();
    let changed = Run {
        name: "renamed".to_owned(),
        name_source: NameSource::Haiku,
        status: RunStatus::Completed,
        exit_reason: Some(ExitReason::CompletePlan),
        failure: Some("note".to_owned()),
        worktree_path: PathBuf::from("/elsewhere/wt"),
        run_branch: "loop/renamed".to_owned(),
        merge_target_branch: Some("main".to_owned()),
        merge_strategy: MergeStrategy::None,
        config: json!({ "changed": true }),
        iterations_run: 5,
        tasks_done: 5,
        tasks_total: 5,
        created_at: run.created_at + 1,
        worker_id: None,
        lease_expires_at: None,
        lease_epoch: 0,
        review_status: crate::domain::ReviewStatus::Merged,
        review_action_at: Some(T0 + 9_000),
        merge_commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        pr_url: None,
        ..run.clone()
    };
    ok("update_run", store.update_run(&changed).await);
    let stored = ok("get_run", store.get_run(run.id).await);
    assert!(
        stored.updated_at >= before_update,
        "store contract: update_run must set updated_at to the current time (was {}, update began at {before_update})",
        stored.updated_at
    );
    let expected = Run {
        created_at: run.created_at,
        updated_at: stored.updated_at,
        worker_id: run.worker_id.clone(),
        lease_expires_at: run.lease_expires_at,
        lease_epoch: run.lease_epoch,
        ..changed.clone()
    };
    assert_eq!(
        stored, expected,
        "store contract: update_run must replace every field except id, created_at and the lease columns"
    );

    ok("repeated update_run", store.update_run(&changed).await);
    let again = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        Run {
            updated_at: stored.updated_at,
            ..again
        },
        stored,
        "store contract: repeating update_run with the same value must change nothing else"
    );

    assert_not_found(
        "update_run of an unknown run",
        store.update_run(&sample_run(&workspace("update"))).await,
    );
}

fn ids(runs: &[Run]) -> Vec<RunId> {
    runs.iter().map(|r| r.id).collect()
}

/// `list_runs` filters by workspace, statuses, limit and `before`, newest first (creation
/// time, then id); an unknown `before` run is `NotFound`.
pub async fn list_runs_filters_and_orders_newest_first(store: &dyn Store) {
    let ws_a = workspace("list-a");
    let ws_b = workspace("list-b");
    let t = now_ms() - 10_000;
    let mut r1 = sample_run(&ws_a);
    r1.created_at = t;
    let mut r2 = sample_run(&ws_a);
    r2.created_at = t + 1;
    r2.status = RunStatus::Paused;
    let mut r3 = sample_run(&ws_a);
    r3.created_at = t + 2;
    // Same creation time as r3 and a later (UUIDv7) id: the id breaks the tie.
    let mut r4 = sample_run(&ws_a);
    r4.created_at = t + 2;
    r4.status = RunStatus::Completed;
    let other = sample_run(&ws_b);
    // Created out of order, so an implementation returning insertion order fails.
    for run in [&r3, &r1, &other, &r4, &r2] {
        create(store, run).await;
    }
    let list = |filter: RunFilter| async move { ok("list_runs", store.list_runs(&filter).await) };
    let in_a = RunFilter {
        workspace_root: Some(PathBuf::from(&ws_a)),
        ..RunFilter::default()
    };

    assert_eq!(
        ids(&list(in_a.clone()).await),
        vec![r4.id, r3.id, r2.id, r1.id],
        "store contract: list_runs must return the workspace's runs newest first"
    );
    assert_eq!(
        list(in_a.clone()).await[1],
        r3,
        "store contract: list_runs must return whole runs"
    );
    assert_eq!(
        ids(&list(RunFilter {
            statuses: vec![RunStatus::Paused],
            ..in_a.clone()
        })
        .await),
        vec![r2.id],
        "store contract: list_runs must filter by status"
    );
    assert_eq!(
        ids(&list(RunFilter {
            statuses: vec![RunStatus::Pending, RunStatus::Completed],
            ..in_a.clone()
        })
        .await),
        vec![r4.id, r3.id, r1.id],
        "store contract: list_runs must accept several statuses"
    );
    assert_eq!(
        ids(&list(RunFilter {
            limit: Some(2),
            ..in_a.clone()
        })
        .await),
        vec![r4.id, r3.id],
        "store contract: list_runs must keep the newest `limit` runs"
    );
    assert_eq!(
        ids(&list(RunFilter {
            before: Some(r3.id),
            ..in_a.clone()
        })
        .await),
        vec![r2.id, r1.id],
        "store contract: list_runs must return only runs created before `before`"
    );
    assert_eq!(
        ids(&list(RunFilter {
            before: Some(r3.id),
            limit: Some(1),
            ..in_a.clone()
        })
        .await),
        vec![r2.id],
        "store contract: `before` and `limit` must combine"
    );
    assert_eq!(
        ids(&list(RunFilter {
            before: Some(r1.id),
            ..in_a.clone()
        })
        .await),
        Vec::<RunId>::new(),
        "store contract: nothing is older than the oldest run"
    );
    assert_eq!(
        ids(&list(RunFilter {
            workspace_root: Some(PathBuf::from(&ws_b)),
            ..RunFilter::default()
        })
        .await),
        vec![other.id],
        "store contract: list_runs must filter by workspace"
    );
    assert_eq!(
        list(RunFilter {
            workspace_root: Some(PathBuf::from(workspace("list-empty"))),
            ..RunFilter::default()
        })
        .await,
        Vec::new(),
        "store contract: a workspace without runs lists nothing"
    );

    let all = list(RunFilter::default()).await;
    for id in [r1.id, r2.id, r3.id, r4.id, other.id] {
        assert!(
            all.iter().any(|r| r.id == id),
            "store contract: list_runs without a filter must return every run"
        );
    }
    assert!(
        all.windows(2)
            .all(|w| (w[0].created_at, w[0].id) > (w[1].created_at, w[1].id)),
        "store contract: list_runs without a filter must be newest first"
    );
    assert_not_found(
        "list_runs before an unknown run",
        store
            .list_runs(&RunFilter {
                before: Some(RunId::new()),
                ..RunFilter::default()
            })
            .await,
    );
}

/// Steps read back as inserted and updated, and list in `seq` order.
pub async fn steps_round_trip_in_seq_order(store: &dyn Store) {
    let run = sample_run(&workspace("steps"));
    create(store, &run).await;
    assert_eq!(
        ok("list_steps", store.list_steps(run.id).await),
        Vec::new(),
        "store contract: a new run has no steps"
    );
    let s1 = sample_step(run.id, 1);
    let s2 = full_step(run.id, 2);
    let s3 = sample_step(run.id, 3);
    for step in [&s2, &s3, &s1] {
        ok("insert_step", store.insert_step(step).await);
    }
    assert_eq!(
        ok("get_step", store.get_step(s2.id).await),
        s2,
        "store contract: a step must read back as inserted, with every field"
    );
    assert_eq!(
        ok("list_steps", store.list_steps(run.id).await),
        vec![s1.clone(), s2.clone(), s3.clone()],
        "store contract: list_steps must return the run's steps in seq order"
    );

    let finished = Step {
        status: StepStatus::Succeeded,
        started_at: Some(T0),
        ended_at: Some(T0 + 1_500),
        exit_code: Some(0),
        head_after: Some("abc".to_owned()),
        agent_pid: Some(42),
        agent_start_time: Some(7),
        usage: Some(AgentUsage {
            num_turns: Some(1),
            ..AgentUsage::default()
        }),
        resources: Some(AgentResources {
            cpu_usec: 5,
            ..AgentResources::default()
        }),
        ..s1.clone()
    };
    ok("update_step", store.update_step(&finished).await);
    ok("repeated update_step", store.update_step(&finished).await);
    assert_eq!(
        ok("get_step", store.get_step(s1.id).await),
        finished,
        "store contract: update_step must replace the step"
    );
    let cleared = Step {
        usage: None,
        resources: None,
        exit_code: None,
        ..s2.clone()
    };
    ok("update_step", store.update_step(&cleared).await);
    assert_eq!(
        ok("get_step", store.get_step(s2.id).await),
        cleared,
        "store contract: update_step must clear optional fields set to None"
    );
    assert_eq!(
        ok("list_steps", store.list_steps(run.id).await),
        vec![finished, cleared, s3],
        "store contract: list_steps must show the updates"
    );
}

/// Unknown steps are `NotFound`, duplicate ids and duplicate `(run, seq)` are `Conflict`, and
/// steps of unknown runs are `NotFound`.
pub async fn step_errors(store: &dyn Store) {
    let run = sample_run(&workspace("step-errors"));
    create(store, &run).await;
    let step = sample_step(run.id, 1);
    ok("insert_step", store.insert_step(&step).await);

    assert_not_found(
        "get_step of an unknown id",
        store.get_step(StepId::new()).await,
    );
    assert_not_found(
        "update_step of an unknown id",
        store.update_step(&sample_step(run.id, 9)).await,
    );
    assert_conflict(
        "insert_step with an existing id",
        store
            .insert_step(&Step {
                seq: 2,
                ..step.clone()
            })
            .await,
    );
    assert_conflict(
        "insert_step with an existing (run, seq)",
        store.insert_step(&sample_step(run.id, 1)).await,
    );
    assert_not_found(
        "insert_step of an unknown run",
        store.insert_step(&sample_step(RunId::new(), 1)).await,
    );
    assert_not_found(
        "list_steps of an unknown run",
        store.list_steps(RunId::new()).await,
    );
    assert_eq!(
        ok("list_steps", store.list_steps(run.id).await),
        vec![step],
        "store contract: rejected step writes must not change anything"
    );
}

/// Events of each run are numbered 1, 2, 3, ... independently of other runs, read back as
/// appended, and `last_event_seq` follows.
pub async fn events_are_numbered_per_run(store: &dyn Store) {
    let a = sample_run(&workspace("events"));
    let b = sample_run(&workspace("events"));
    create(store, &a).await;
    create(store, &b).await;
    let step = sample_step(a.id, 1);
    ok("insert_step", store.insert_step(&step).await);
    assert_eq!(ok("last_event_seq", store.last_event_seq(a.id).await), 0);
    assert_eq!(
        ok("events_after", store.events_after(a.id, 0, 100).await),
        Vec::new(),
        "store contract: a new run has no events"
    );

    let mut appended_a = Vec::new();
    let mut appended_b = Vec::new();
    for n in 1..=5 {
        let mut event = sample_event(a.id, n);
        if n == 2 {
            event = NewEvent {
                kind: EventKind::StepStarted,
                payload: json!({ "step_id": step.id, "phase": "implementation", "attempt": 1 }),
                ..event
            }
            .with_step(step.id);
        }
        let got = ok("append_event", store.append_event(&event).await);
        assert_eq!(
            got.seq, n,
            "store contract: the n-th event of a run has seq n"
        );
        assert_eq!(
            (got.run_id, got.step_id, got.kind, got.ts, &got.payload),
            (
                event.run_id,
                event.step_id,
                event.kind,
                event.ts,
                &event.payload
            ),
            "store contract: append_event must return the event as given"
        );
        appended_a.push(got);
        if n <= 3 {
            let got = ok(
                "append_event",
                store.append_event(&sample_event(b.id, 100 + n)).await,
            );
            assert_eq!(
                got.seq, n,
                "store contract: each run numbers its events independently"
            );
            appended_b.push(got);
        }
    }
    assert_eq!(
        ok("events_after", store.events_after(a.id, 0, 100).await),
        appended_a,
        "store contract: events must read back in order, as appended"
    );
    assert_eq!(
        ok("events_after", store.events_after(b.id, 0, 100).await),
        appended_b,
        "store contract: events of another run must not mix in"
    );
    assert_eq!(ok("last_event_seq", store.last_event_seq(a.id).await), 5);
    assert_eq!(ok("last_event_seq", store.last_event_seq(b.id).await), 3);
}

/// `events_after(k, limit)` returns exactly the events `k+1 ..`, at most `limit` of them.
pub async fn events_after_returns_the_tail(store: &dyn Store) {
    let run = sample_run(&workspace("tail"));
    create(store, &run).await;
    for n in 1..=10 {
        ok(
            "append_event",
            store.append_event(&sample_event(run.id, n)).await,
        );
    }
    let seqs = |events: Vec<crate::domain::Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    for k in 0..=10u64 {
        assert_eq!(
            seqs(ok(
                "events_after",
                store.events_after(run.id, k, 1_000).await
            )),
            (k + 1..=10).collect::<Vec<_>>(),
            "store contract: events_after({k}) must return exactly the events after {k}"
        );
        assert_eq!(
            seqs(ok("events_after", store.events_after(run.id, k, 3).await)),
            (k + 1..=10).take(3).collect::<Vec<_>>(),
            "store contract: events_after({k}, limit 3) must return the next 3 at most"
        );
    }
    assert_eq!(
        ok("events_after", store.events_after(run.id, 99, 10).await),
        Vec::new(),
        "store contract: nothing follows a seq past the end"
    );
    assert_eq!(
        ok("events_after", store.events_after(run.id, 0, 0).await),
        Vec::new(),
        "store contract: limit 0 returns nothing"
    );
    let first = ok("events_after", store.events_after(run.id, 0, 1).await);
    assert_eq!(
        first.first().map(|e| &e.payload),
        Some(&json!({ "n": 1 })),
        "store contract: events_after must return the stored payload"
    );
}

/// Appending to, reading or counting the events of an unknown run is `NotFound`, and so is an
/// event naming an unknown step; nothing is appended then.
pub async fn event_errors(store: &dyn Store) {
    let unknown = RunId::new();
    assert_not_found(
        "append_event to an unknown run",
        store.append_event(&sample_event(unknown, 1)).await,
    );
    assert_not_found(
        "events_after of an unknown run",
        store.events_after(unknown, 0, 10).await,
    );
    assert_not_found(
        "last_event_seq of an unknown run",
        store.last_event_seq(unknown).await,
    );
    let run = sample_run(&workspace("event-errors"));
    create(store, &run).await;
    assert_not_found(
        "append_event naming an unknown step",
        store
            .append_event(&sample_event(run.id, 1).with_step(StepId::new()))
            .await,
    );
    assert_eq!(
        ok("last_event_seq", store.last_event_seq(run.id).await),
        0,
        "store contract: a rejected append must not use up a seq"
    );
    let got = ok(
        "append_event",
        store.append_event(&sample_event(run.id, 1)).await,
    );
    assert_eq!(
        got.seq, 1,
        "store contract: a rejected append must leave no gap"
    );
}

async fn append_many(store: &dyn Store, run_id: RunId, task: u64, count: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 0..count {
        let event = NewEvent {
            payload: json!({ "task": task, "i": i }),
            ..sample_event(run_id, i)
        };
        seqs.push(ok("append_event", store.append_event(&event).await).seq);
    }
    seqs
}

/// Checks that the events of `run_id` are exactly `1..=total`, with every appender's own
/// events in its call order.
async fn assert_gap_free(store: &dyn Store, run_id: RunId, returned: Vec<Vec<u64>>, total: u64) {
    let mut all: Vec<u64> = returned.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "store contract: concurrent appends must get the seqs 1..={total} without gaps or duplicates"
    );
    for seqs in &returned {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "store contract: one caller's appends must be numbered in call order"
        );
    }
    let limit = u32::try_from(total + 10).unwrap_or(u32::MAX);
    let stored = ok("events_after", store.events_after(run_id, 0, limit).await);
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "store contract: the stored events must be 1..={total} in order"
    );
    for (task, seqs) in returned.iter().enumerate() {
        for (i, seq) in seqs.iter().enumerate() {
            let event = stored
                .iter()
                .find(|e| e.seq == *seq)
                .unwrap_or_else(|| panic!("store contract: event {seq} is missing"));
            assert_eq!(
                event.payload,
                json!({ "task": task, "i": i }),
                "store contract: event {seq} must hold the payload it was appended with"
            );
        }
    }
    assert_eq!(
        ok("last_event_seq", store.last_event_seq(run_id).await),
        total
    );
}

/// Appends interleaved on one task (`tokio::join!`) are gap-free and unique.
pub async fn interleaved_appends(store: &dyn Store) {
    let run = sample_run(&workspace("interleaved"));
    create(store, &run).await;
    let (a, b, c) = tokio::join!(
        append_many(store, run.id, 0, 30),
        append_many(store, run.id, 1, 30),
        append_many(store, run.id, 2, 30),
    );
    assert_gap_free(store, run.id, vec![a, b, c], 90).await;
}

/// 8 spawned tasks append 50 events each to one run: the seqs are exactly 1..=400, without
/// gaps or duplicates, each task's events in its call order. Needs a multi-threaded runtime to
/// mean anything.
pub async fn concurrent_appends(store: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 50;
    let run = sample_run(&workspace("concurrent"));
    create(store.as_ref(), &run).await;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            append_many(store.as_ref(), run.id, task, PER_TASK).await
        }));
    }
    let mut returned = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(seqs) => returned.push(seqs),
            Err(e) => panic!("store contract: an appending task panicked: {e}"),
        }
    }
    assert_gap_free(store.as_ref(), run.id, returned, TASKS * PER_TASK).await;
}

/// Claims everything claimable at [`DRAIN_NOW`], so that a check sees only its own runs in
/// the queue. The drained runs keep leases no check's clock reaches.
async fn drain_queue(store: &dyn Store) {
    let req = claim_request("drain", DRAIN_NOW);
    let req = ClaimRequest {
        lease_ms: DRAIN_NOW,
        ..req
    };
    while ok("claim_next_run", store.claim_next_run(&req).await).is_some() {}
}

fn claim_request(worker: &str, now: UnixMs) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.to_owned(),
        now,
        lease_ms: 1_000,
        order: QueueOrder::Fifo,
        skip_workspaces: Vec::new(),
        skip_runs: Vec::new(),
    }
}

async fn claim(store: &dyn Store, req: &ClaimRequest) -> Option<Run> {
    ok("claim_next_run", store.claim_next_run(req).await)
}

/// A `PENDING` run is claimed once: it becomes `RUNNING` with the worker and a lease until
/// `now + lease_ms`, and a second claim finds nothing while the lease holds.
pub async fn claim_takes_pending_and_sets_the_lease(store: &dyn Store) {
    drain_queue(store).await;
    assert_eq!(
        claim(store, &claim_request("w1", T0)).await,
        None,
        "store contract: an empty queue has nothing to claim"
    );
    let run = sample_run(&workspace("claim"));
    create(store, &run).await;
    let claimed = claim(store, &claim_request("w1", T0)).await;
    let Some(claimed) = claimed else {
        panic!("store contract: a PENDING run must be claimable");
    };
    assert_eq!(claimed.id, run.id, "store contract: claimed the wrong run");
    assert_eq!(claimed.status, RunStatus::Running);
    assert_eq!(claimed.worker_id.as_deref(), Some("w1"));
    assert_eq!(claimed.lease_expires_at, Some(T0 + 1_000));
    assert_eq!(
        claimed.lease_epoch,
        run.lease_epoch + 1,
        "store contract: a claim must increment the lease epoch"
    );
    assert_eq!(
        ok("get_run", store.get_run(run.id).await),
        claimed,
        "store contract: claim_next_run must return the run as stored"
    );
    assert_eq!(
        claim(store, &claim_request("w2", T0 + 10)).await,
        None,
        "store contract: a RUNNING run with a live lease must not be claimed"
    );
}

/// `PAUSED` and terminal runs are never claimed, not even at a far-future clock.
pub async fn claim_never_takes_paused_or_terminal_runs(store: &dyn Store) {
    drain_queue(store).await;
    for status in [
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Canceled,
    ] {
        let mut run = sample_run(&workspace("unclaimable"));
        run.status = status;
        create(store, &run).await;
    }
    assert_eq!(
        claim(store, &claim_request("w1", DRAIN_NOW)).await,
        None,
        "store contract: PAUSED and terminal runs must never be claimed"
    );
}

/// A `RUNNING` run whose lease expired is claimed by another worker, which then holds it;
/// the old worker can no longer renew.
pub async fn claim_takes_over_expired_leases(store: &dyn Store) {
    drain_queue(store).await;
    let run = sample_run(&workspace("expired"));
    create(store, &run).await;
    let first = claim(store, &claim_request("w1", T0)).await;
    assert_eq!(first.map(|r| r.id), Some(run.id));
    assert_eq!(
        claim(store, &claim_request("w2", T0 + 999)).await,
        None,
        "store contract: a lease is live until now + lease_ms"
    );
    let taken = claim(store, &claim_request("w2", T0 + 1_000)).await;
    let Some(taken) = taken else {
        panic!("store contract: a RUNNING run with an expired lease must be claimable");
    };
    assert_eq!(taken.id, run.id);
    assert_eq!(taken.status, RunStatus::Running);
    assert_eq!(taken.worker_id.as_deref(), Some("w2"));
    assert_eq!(taken.lease_expires_at, Some(T0 + 2_000));
    assert_eq!(
        taken.lease_epoch,
        run.lease_epoch + 2,
        "store contract: every claim must increment the lease epoch"
    );
    assert_conflict(
        "renew_lease by the worker that lost the run",
        store.renew_lease(run.id, "w1", T0 + 5_000).await,
    );
}

/// `Fifo` claims the oldest run first, `NewestFirst` the newest.
pub async fn claim_follows_the_queue_order(store: &dyn Store) {
    drain_queue(store).await;
    let ws = workspace("order");
    let t = now_ms() - 10_000;
    let mut runs = Vec::new();
    for offset in [1, 0, 2] {
        let mut run = sample_run(&ws);
        run.created_at = t + offset;
        create(store, &run).await;
        runs.push(run);
    }
    let (middle, oldest, newest) = (runs[0].id, runs[1].id, runs[2].id);
    let newest_first = ClaimRequest {
        order: QueueOrder::NewestFirst,
        ..claim_request("w1", T0)
    };
    assert_eq!(
        claim(store, &claim_request("w1", T0)).await.map(|r| r.id),
        Some(oldest),
        "store contract: fifo must claim the oldest run"
    );
    assert_eq!(
        claim(store, &newest_first).await.map(|r| r.id),
        Some(newest),
        "store contract: newest_first must claim the newest run"
    );
    assert_eq!(
        claim(store, &claim_request("w1", T0)).await.map(|r| r.id),
        Some(middle),
        "store contract: the last queued run must be claimed last"
    );
}

/// `skip_workspaces` and `skip_runs` keep runs out of a claim.
pub async fn claim_honours_skips(store: &dyn Store) {
    drain_queue(store).await;
    let ws_a = workspace("skip-a");
    let ws_b = workspace("skip-b");
    let a1 = sample_run(&ws_a);
    let b1 = sample_run(&ws_b);
    let a2 = sample_run(&ws_a);
    for run in [&a1, &b1, &a2] {
        create(store, run).await;
    }
    let skip_a = ClaimRequest {
        skip_workspaces: vec![PathBuf::from(&ws_a)],
        ..claim_request("w1", T0)
    };
    assert_eq!(
        claim(store, &skip_a).await.map(|r| r.id),
        Some(b1.id),
        "store contract: skip_workspaces must be honoured"
    );
    assert_eq!(
        claim(store, &skip_a).await,
        None,
        "store contract: skip_workspaces must be honoured"
    );
    let skip_a1 = ClaimRequest {
        skip_runs: vec![a1.id],
        ..claim_request("w1", T0)
    };
    assert_eq!(
        claim(store, &skip_a1).await.map(|r| r.id),
        Some(a2.id),
        "store contract: skip_runs must be honoured"
    );
    let skip_both = ClaimRequest {
        skip_runs: vec![a1.id, a2.id],
        skip_workspaces: vec![PathBuf::from(&ws_b), PathBuf::from(workspace("skip-c"))],
        ..claim_request("w1", T0)
    };
    assert_eq!(
        claim(store, &skip_both).await,
        None,
        "store contract: several skips must combine"
    );
    assert_eq!(
        claim(store, &claim_request("w1", T0)).await.map(|r| r.id),
        Some(a1.id),
        "store contract: a skipped run stays claimable for others"
    );
}

async fn claim_until_empty(store: &dyn Store, worker: &str) -> Vec<RunId> {
    let mut claimed = Vec::new();
    while let Some(run) = claim(store, &claim_request(worker, T0)).await {
        assert_eq!(run.worker_id.as_deref(), Some(worker));
        claimed.push(run.id);
    }
    claimed
}

fn assert_claimed_once(created: &[RunId], claimed: Vec<Vec<RunId>>) {
    let mut all: Vec<RunId> = claimed.into_iter().flatten().collect();
    let unique: BTreeSet<RunId> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "store contract: two claims must never get the same run"
    );
    all.sort();
    let mut created = created.to_vec();
    created.sort();
    assert_eq!(
        all, created,
        "store contract: every claimable run must be claimed exactly once"
    );
}

/// Workers claiming at once on one task (`tokio::join!`) never get the same run.
pub async fn interleaved_claims(store: &dyn Store) {
    drain_queue(store).await;
    let ws = workspace("interleaved-claims");
    let mut created = Vec::new();
    for _ in 0..6 {
        let run = sample_run(&ws);
        create(store, &run).await;
        created.push(run.id);
    }
    let (a, b, c) = tokio::join!(
        claim_until_empty(store, "w1"),
        claim_until_empty(store, "w2"),
        claim_until_empty(store, "w3"),
    );
    assert_claimed_once(&created, vec![a, b, c]);
}

/// 4 spawned workers claim 20 runs at once: each run goes to exactly one of them. Needs a
/// multi-threaded runtime to mean anything.
pub async fn concurrent_claims(store: Arc<dyn Store>) {
    drain_queue(store.as_ref()).await;
    let ws = workspace("concurrent-claims");
    let mut created = Vec::new();
    for _ in 0..20 {
        let run = sample_run(&ws);
        create(store.as_ref(), &run).await;
        created.push(run.id);
    }
    let mut handles = Vec::new();
    for worker in 0..4 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            claim_until_empty(store.as_ref(), &format!("worker-{worker}")).await
        }));
    }
    let mut claimed = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(ids) => claimed.push(ids),
            Err(e) => panic!("store contract: a claiming task panicked: {e}"),
        }
    }
    assert_claimed_once(&created, claimed);
}

/// The holder renews its lease; another worker's renewal is `Conflict`; release by another
/// worker is a no-op; release by the holder clears the lease and makes the run claimable
/// again.
pub async fn renew_and_release(store: &dyn Store) {
    drain_queue(store).await;
    let run = sample_run(&workspace("lease"));
    create(store, &run).await;
    let claimed = claim(store, &claim_request("w1", T0)).await;
    assert_eq!(claimed.map(|r| r.id), Some(run.id));

    ok(
        "renew_lease by the holder",
        store.renew_lease(run.id, "w1", T0 + 50_000).await,
    );
    let renewed = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        renewed.lease_expires_at,
        Some(T0 + 50_000),
        "store contract: renew_lease must move the expiry"
    );
    assert_eq!(
        claim(store, &claim_request("w2", T0 + 10_000)).await,
        None,
        "store contract: a renewed lease must keep the run from other workers"
    );
    assert_conflict(
        "renew_lease by another worker",
        store.renew_lease(run.id, "w2", T0 + 60_000).await,
    );
    assert_not_found(
        "renew_lease of an unknown run",
        store.renew_lease(RunId::new(), "w1", T0).await,
    );

    ok(
        "release_run by another worker",
        store.release_run(run.id, "w2").await,
    );
    assert_eq!(
        ok("get_run", store.get_run(run.id).await),
        renewed,
        "store contract: release_run by another worker must change nothing"
    );
    ok("release_run", store.release_run(run.id, "w1").await);
    let released = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        (released.worker_id.as_deref(), released.lease_expires_at),
        (None, None),
        "store contract: release_run must clear the lease"
    );
    assert_eq!(
        released.status,
        RunStatus::Running,
        "store contract: release_run must not change the status"
    );
    ok(
        "repeated release_run",
        store.release_run(run.id, "w1").await,
    );
    assert_conflict(
        "renew_lease after release",
        store.renew_lease(run.id, "w1", T0 + 60_000).await,
    );
    assert_not_found(
        "release_run of an unknown run",
        store.release_run(RunId::new(), "w1").await,
    );
    let reclaimed = claim(store, &claim_request("w2", T0 + 10_000)).await;
    assert_eq!(
        reclaimed.and_then(|r| r.worker_id),
        Some("w2".to_owned()),
        "store contract: a released RUNNING run must be claimable again"
    );
}

/// Artifacts are recorded with every field; recording the same `(run, location, path)` again
/// updates kind and checksum in place; the same path in the other location is another
/// artifact.
pub async fn artifacts_upsert_by_location_and_path(store: &dyn Store) {
    let run = sample_run(&workspace("artifacts"));
    create(store, &run).await;
    assert_eq!(
        ok("list_artifacts", store.list_artifacts(run.id).await),
        Vec::new(),
        "store contract: a new run has no artifacts"
    );
    let before = now_ms();
    let log = sample_artifact(run.id, "/logs/run/iter-1.log");
    let first = ok("record_artifact", store.record_artifact(&log).await);
    assert_eq!(
        (
            first.run_id,
            first.kind,
            first.location,
            &first.path,
            &first.checksum
        ),
        (log.run_id, log.kind, log.location, &log.path, &log.checksum),
        "store contract: record_artifact must return the artifact as given"
    );
    assert!(
        first.recorded_at >= before,
        "store contract: recorded_at must be the time of recording"
    );
    let report = NewArtifact {
        kind: ArtifactKind::Report,
        ..sample_artifact(run.id, "/logs/run/report.tsv")
    };
    let second = ok("record_artifact", store.record_artifact(&report).await);
    assert_ne!(
        first.id, second.id,
        "store contract: artifact ids are unique"
    );

    let rewritten = NewArtifact {
        kind: ArtifactKind::IterationTail,
        checksum: "f".repeat(64),
        ..log.clone()
    };
    let updated = ok("record_artifact", store.record_artifact(&rewritten).await);
    assert_eq!(
        updated.id, first.id,
        "store contract: re-recording a path must keep its artifact id"
    );
    assert_eq!(
        (updated.kind, updated.checksum.as_str()),
        (ArtifactKind::IterationTail, "f".repeat(64).as_str()),
        "store contract: re-recording a path must update kind and checksum"
    );
    let global = NewArtifact {
        location: ArtifactLocation::Global,
        ..log.clone()
    };
    let elsewhere = ok("record_artifact", store.record_artifact(&global).await);
    assert!(
        elsewhere.id != first.id && elsewhere.id != second.id,
        "store contract: the same path in another location is another artifact"
    );

    let listed = ok("list_artifacts", store.list_artifacts(run.id).await);
    assert_eq!(
        listed.len(),
        3,
        "store contract: re-recording must not add a row: {listed:?}"
    );
    for expected in [&updated, &second, &elsewhere] {
        assert!(
            listed.contains(expected),
            "store contract: list_artifacts must contain {expected:?}, got {listed:?}"
        );
    }
    assert_not_found(
        "record_artifact of an unknown run",
        store
            .record_artifact(&sample_artifact(RunId::new(), "/x"))
            .await,
    );
    assert_not_found(
        "list_artifacts of an unknown run",
        store.list_artifacts(RunId::new()).await,
    );
}

async fn counts(store: &dyn Store) -> Vec<(RunStatus, u64)> {
    let counts = ok("count_runs_by_status", store.count_runs_by_status().await);
    let statuses: BTreeSet<RunStatus> = counts.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.len(),
        counts.len(),
        "store contract: count_runs_by_status must name each status once: {counts:?}"
    );
    counts
}

fn count_of(counts: &[(RunStatus, u64)], status: RunStatus) -> u64 {
    counts
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

/// `count_runs_by_status` counts every run under its status.
pub async fn count_runs_by_status(store: &dyn Store) {
    let before = counts(store).await;
    let ws = workspace("count");
    for status in [RunStatus::Pending, RunStatus::Failed, RunStatus::Pending] {
        let mut run = sample_run(&ws);
        run.status = status;
        create(store, &run).await;
    }
    let after = counts(store).await;
    for status in RunStatus::ALL {
        let added = match status {
            RunStatus::Pending => 2,
            RunStatus::Failed => 1,
            _ => 0,
        };
        assert_eq!(
            count_of(&after, *status),
            count_of(&before, *status) + added,
            "store contract: count_runs_by_status must count {status} runs"
        );
    }
}

#[track_caller]
fn assert_not_found_naming<T: Debug>(what: &str, id: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound { what: found }) if found.contains(id) => {}
        other => panic!("store contract: {what} must be NotFound naming {id}, got {other:?}"),
    }
}

/// A batch applies its writes in order (an event may name a step the same batch inserts),
/// returns the events and artifacts it created in batch order exactly as they read back, and
/// its events' seqs continue gap-free between single appends and other batches.
pub async fn batch_applies_in_order(store: &dyn Store) {
    let a = sample_run(&workspace("batch"));
    let b = sample_run(&workspace("batch"));
    create(store, &a).await;
    create(store, &b).await;
    let s1 = sample_step(a.id, 1);
    ok("insert_step", store.insert_step(&s1).await);
    let first = ok(
        "append_event",
        store.append_event(&sample_event(a.id, 1)).await,
    );
    assert_eq!(first.seq, 1);

    let s2 = full_step(a.id, 2);
    let s1_done = Step {
        status: StepStatus::Succeeded,
        ended_at: Some(T0 + 9),
        exit_code: Some(0),
        ..s1.clone()
    };
    let log = sample_artifact(a.id, "/logs/batch/iter-1.log");
    let log_again = NewArtifact {
        kind: ArtifactKind::IterationTail,
        checksum: "1".repeat(64),
        ..log.clone()
    };
    let a_running = Run {
        status: RunStatus::Running,
        iterations_run: 5,
        tasks_done: 2,
        ..a.clone()
    };
    let batch = vec![
        StoreWrite::InsertStep(s2.clone()),
        StoreWrite::AppendEvent(sample_event(a.id, 2).with_step(s2.id)),
        StoreWrite::UpdateStep(s1_done.clone()),
        StoreWrite::AppendEvent(sample_event(b.id, 1)),
        StoreWrite::RecordArtifact(log.clone()),
        StoreWrite::AppendEvent(sample_event(a.id, 3)),
        StoreWrite::RecordArtifact(log_again.clone()),
        StoreWrite::UpdateRun(a_running.clone()),
        StoreWrite::AppendEvent(sample_event(a.id, 4)),
    ];
    let outcome = ok("write_batch", store.write_batch(&batch).await);

    assert_eq!(
        outcome
            .events
            .iter()
            .map(|e| (e.run_id, e.seq))
            .collect::<Vec<_>>(),
        vec![(a.id, 2), (b.id, 1), (a.id, 3), (a.id, 4)],
        "store contract: a batch's events come back in batch order with the runs' next seqs"
    );
    let stored_a = ok("events_after", store.events_after(a.id, 1, 100).await);
    let stored_b = ok("events_after", store.events_after(b.id, 0, 100).await);
    let batched_a: Vec<Event> = outcome
        .events
        .iter()
        .filter(|e| e.run_id == a.id)
        .cloned()
        .collect();
    assert_eq!(
        stored_a, batched_a,
        "store contract: write_batch must return the events exactly as events_after reads them"
    );
    assert_eq!(
        stored_b,
        vec![outcome.events[1].clone()],
        "store contract: a batch's event of another run must land in that run"
    );
    assert_eq!(
        outcome.events[0].step_id,
        Some(s2.id),
        "store contract: an event may name a step inserted earlier in the same batch"
    );

    assert_eq!(
        outcome.artifacts.len(),
        2,
        "store contract: write_batch must return every recorded artifact"
    );
    assert_eq!(
        outcome.artifacts[0].id, outcome.artifacts[1].id,
        "store contract: re-recording a path inside a batch must keep its artifact id"
    );
    assert_eq!(
        (&outcome.artifacts[0].checksum, outcome.artifacts[0].kind),
        (&log.checksum, log.kind),
        "store contract: each artifact comes back as recorded at its place in the batch"
    );
    assert_eq!(
        ok("list_artifacts", store.list_artifacts(a.id).await),
        vec![outcome.artifacts[1].clone()],
        "store contract: the artifact must read back as the batch's last record of it"
    );

    assert_eq!(
        ok("get_step", store.get_step(s2.id).await),
        s2,
        "store contract: a batch's inserted step must read back"
    );
    assert_eq!(
        ok("get_step", store.get_step(s1.id).await),
        s1_done,
        "store contract: a batch's step update must be applied"
    );
    let stored_run = ok("get_run", store.get_run(a.id).await);
    assert_eq!(
        (
            stored_run.status,
            stored_run.iterations_run,
            stored_run.tasks_done
        ),
        (RunStatus::Running, 5, 2),
        "store contract: a batch's run update must be applied"
    );

    let single = ok(
        "append_event",
        store.append_event(&sample_event(a.id, 5)).await,
    );
    assert_eq!(
        single.seq, 5,
        "store contract: single appends continue after a batch without a gap"
    );
    let next = ok(
        "write_batch",
        store
            .write_batch(&[
                StoreWrite::AppendEvent(sample_event(a.id, 6)),
                StoreWrite::AppendEvent(sample_event(a.id, 7)),
            ])
            .await,
    );
    assert_eq!(
        next.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7],
        "store contract: a batch continues after single appends without a gap"
    );
    assert_eq!(ok("last_event_seq", store.last_event_seq(a.id).await), 7);
}

/// A batch that fails applies nothing: the error is the first failing write's (the same
/// variant as the single method's), none of the earlier writes is visible, and its events
/// use up no seq.
pub async fn batch_is_atomic(store: &dyn Store) {
    let run = sample_run(&workspace("batch-atomic"));
    create(store, &run).await;
    let s1 = sample_step(run.id, 1);
    ok("insert_step", store.insert_step(&s1).await);
    ok(
        "append_event",
        store.append_event(&sample_event(run.id, 1)).await,
    );

    let s2 = sample_step(run.id, 2);
    let s1_changed = Step {
        status: StepStatus::InProgress,
        ..s1.clone()
    };
    let renamed = Run {
        name: "renamed".to_owned(),
        iterations_run: 9,
        ..run.clone()
    };
    let unknown_step = StepId::new();
    let unknown_run = RunId::new();
    let ghost_step = sample_step(run.id, 7);
    let ghost_run = sample_run(&workspace("batch-atomic"));
    let cases: Vec<(&str, Vec<StoreWrite>, String)> = vec![
        (
            "an event naming an unknown step",
            vec![
                StoreWrite::InsertStep(s2.clone()),
                StoreWrite::AppendEvent(sample_event(run.id, 2).with_step(s2.id)),
                StoreWrite::AppendEvent(sample_event(run.id, 3).with_step(unknown_step)),
                StoreWrite::UpdateRun(renamed.clone()),
            ],
            unknown_step.to_string(),
        ),
        (
            "an event of an unknown run",
            vec![
                StoreWrite::AppendEvent(sample_event(run.id, 2)),
                StoreWrite::UpdateStep(s1_changed.clone()),
                StoreWrite::AppendEvent(sample_event(unknown_run, 1)),
            ],
            unknown_run.to_string(),
        ),
        (
            "an update of an unknown step",
            vec![
                StoreWrite::UpdateRun(renamed.clone()),
                StoreWrite::RecordArtifact(sample_artifact(run.id, "/logs/atomic.log")),
                StoreWrite::UpdateStep(ghost_step.clone()),
            ],
            ghost_step.id.to_string(),
        ),
        (
            "an update of an unknown run",
            vec![
                StoreWrite::AppendEvent(sample_event(run.id, 2)),
                StoreWrite::AppendEvent(sample_event(run.id, 3)),
                StoreWrite::UpdateRun(ghost_run.clone()),
            ],
            ghost_run.id.to_string(),
        ),
        (
            "an artifact of an unknown run",
            vec![
                StoreWrite::InsertStep(s2.clone()),
                StoreWrite::UpdateStep(s1_changed.clone()),
                StoreWrite::RecordArtifact(sample_artifact(unknown_run, "/x")),
            ],
            unknown_run.to_string(),
        ),
        (
            "a step of an unknown run, before a later unknown step",
            vec![
                StoreWrite::AppendEvent(sample_event(run.id, 2)),
                StoreWrite::UpdateRun(renamed.clone()),
                StoreWrite::InsertStep(sample_step(unknown_run, 1)),
                StoreWrite::AppendEvent(sample_event(run.id, 3).with_step(unknown_step)),
            ],
            unknown_run.to_string(),
        ),
    ];
    for (what, batch, names) in cases {
        let result = store.write_batch(&batch).await;
        assert_not_found_naming(&format!("a batch with {what}"), &names, result);
        assert_batch_left_nothing(store, &run, &s1, &s2, what).await;
    }

    assert_conflict(
        "a batch inserting a step with an existing id",
        store
            .write_batch(&[
                StoreWrite::AppendEvent(sample_event(run.id, 2)),
                StoreWrite::InsertStep(s2.clone()),
                StoreWrite::InsertStep(Step {
                    seq: 3,
                    ..s1.clone()
                }),
            ])
            .await,
    );
    assert_batch_left_nothing(store, &run, &s1, &s2, "a duplicate step").await;

    let next = ok(
        "append_event",
        store.append_event(&sample_event(run.id, 2)).await,
    );
    assert_eq!(
        next.seq, 2,
        "store contract: the events of failed batches must not use up seqs"
    );
}

/// Checks that none of the writes `batch_is_atomic` tried is visible.
async fn assert_batch_left_nothing(store: &dyn Store, run: &Run, s1: &Step, s2: &Step, what: &str) {
    assert_eq!(
        ok("last_event_seq", store.last_event_seq(run.id).await),
        1,
        "store contract: a failed batch ({what}) must append no event"
    );
    assert_eq!(
        ok("list_steps", store.list_steps(run.id).await),
        vec![s1.clone()],
        "store contract: a failed batch ({what}) must neither insert nor update a step"
    );
    assert_not_found(
        "get_step of a step a failed batch inserted",
        store.get_step(s2.id).await,
    );
    let stored = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        (stored.name.as_str(), stored.iterations_run),
        (run.name.as_str(), run.iterations_run),
        "store contract: a failed batch ({what}) must not update the run"
    );
    assert_eq!(
        ok("list_artifacts", store.list_artifacts(run.id).await),
        Vec::new(),
        "store contract: a failed batch ({what}) must record no artifact"
    );
}

/// An empty batch succeeds, creates nothing and changes nothing.
pub async fn empty_batch_is_a_no_op(store: &dyn Store) {
    let run = sample_run(&workspace("batch-empty"));
    create(store, &run).await;
    assert_eq!(
        ok("write_batch", store.write_batch(&[]).await),
        BatchOutcome::default(),
        "store contract: an empty batch returns an empty outcome"
    );
    assert_eq!(
        ok("get_run", store.get_run(run.id).await),
        run,
        "store contract: an empty batch changes nothing"
    );
    assert_eq!(ok("last_event_seq", store.last_event_seq(run.id).await), 0);
}

/// Appends `count` events to `run_id` with the payloads `{task, i}` that [`assert_gap_free`]
/// checks: batches of up to five, each followed by one single append. Returns the seqs in
/// call order.
async fn append_in_batches(store: &dyn Store, run_id: RunId, task: u64, count: u64) -> Vec<u64> {
    let event = |i: u64| NewEvent {
        payload: json!({ "task": task, "i": i }),
        ..sample_event(run_id, i)
    };
    let mut seqs = Vec::new();
    let mut i = 0;
    while i < count {
        let n = (count - i).min(5);
        let batch: Vec<StoreWrite> = (i..i + n)
            .map(|i| StoreWrite::AppendEvent(event(i)))
            .collect();
        let outcome = ok("write_batch", store.write_batch(&batch).await);
        assert_eq!(
            outcome.events.len(),
            batch.len(),
            "store contract: write_batch must return one event per append"
        );
        seqs.extend(outcome.events.iter().map(|e| e.seq));
        i += n;
        if i < count {
            seqs.push(ok("append_event", store.append_event(&event(i)).await).seq);
            i += 1;
        }
    }
    seqs
}

/// Batches and single appends interleaved on one task (`tokio::join!`) are gap-free and
/// unique.
pub async fn interleaved_batches(store: &dyn Store) {
    let run = sample_run(&workspace("interleaved-batches"));
    create(store, &run).await;
    let (a, b, c) = tokio::join!(
        append_in_batches(store, run.id, 0, 30),
        append_many(store, run.id, 1, 30),
        append_in_batches(store, run.id, 2, 30),
    );
    assert_gap_free(store, run.id, vec![a, b, c], 90).await;
}

/// 8 spawned tasks append 60 events each to one run, half of them in batches and half one by
/// one: the seqs are exactly 1..=480, without gaps or duplicates, each task's events in its
/// call order. Needs a multi-threaded runtime to mean anything.
pub async fn concurrent_batches(store: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 60;
    let run = sample_run(&workspace("concurrent-batches"));
    create(store.as_ref(), &run).await;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            if task % 2 == 0 {
                append_in_batches(store.as_ref(), run.id, task, PER_TASK).await
            } else {
                append_many(store.as_ref(), run.id, task, PER_TASK).await
            }
        }));
    }
    let mut returned = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(seqs) => returned.push(seqs),
            Err(e) => panic!("store contract: a batching task panicked: {e}"),
        }
    }
    assert_gap_free(store.as_ref(), run.id, returned, TASKS * PER_TASK).await;
}

/// A batch that starts with a `Fence` lands while the run's epoch is the fenced one and is
/// refused as a whole (`Conflict`, nothing applied, no sequence number used) once another
/// worker claimed the run; the new holder's fenced batches land. An unknown run is
/// `NotFound`.
pub async fn fenced_batches(store: &dyn Store) {
    drain_queue(store).await;
    let run = sample_run(&workspace("fence"));
    create(store, &run).await;
    let Some(first) = claim(store, &claim_request("w1", T0)).await else {
        panic!("store contract: a PENDING run must be claimable");
    };
    let fence = |epoch| StoreWrite::Fence {
        run_id: run.id,
        epoch,
    };
    let landed = ok(
        "a batch fenced with the current epoch",
        store
            .write_batch(&[
                fence(first.lease_epoch),
                StoreWrite::AppendEvent(sample_event(run.id, 1)),
            ])
            .await,
    );
    assert_eq!(landed.events.len(), 1);

    let Some(second) = claim(store, &claim_request("w2", T0 + 1_000)).await else {
        panic!("store contract: an expired lease must be claimable");
    };
    assert!(second.lease_epoch > first.lease_epoch);
    let mut stale_update = second.clone();
    stale_update.name = "written-by-a-stale-worker".to_owned();
    assert_conflict(
        "a batch fenced with a stale epoch",
        store
            .write_batch(&[
                fence(first.lease_epoch),
                StoreWrite::AppendEvent(sample_event(run.id, 2)),
                StoreWrite::UpdateRun(stale_update),
                StoreWrite::InsertStep(sample_step(run.id, 1)),
            ])
            .await,
    );
    assert_eq!(
        ok("last_event_seq", store.last_event_seq(run.id).await),
        1,
        "store contract: a refused fenced batch must append nothing"
    );
    let after = ok("get_run", store.get_run(run.id).await);
    assert_eq!(
        after.name, run.name,
        "store contract: a refused fenced batch must change nothing"
    );
    assert_eq!(ok("list_steps", store.list_steps(run.id).await), Vec::new());

    let landed = ok(
        "a batch fenced with the new holder's epoch",
        store
            .write_batch(&[
                fence(second.lease_epoch),
                StoreWrite::AppendEvent(sample_event(run.id, 3)),
            ])
            .await,
    );
    assert_eq!(
        landed.events.first().map(|e| e.seq),
        Some(2),
        "store contract: the new holder's events follow without a gap"
    );
    ok("release_run", store.release_run(run.id, "w2").await);
    ok(
        "a fenced batch after the holder's own release",
        store.write_batch(&[fence(second.lease_epoch)]).await,
    );
    assert_not_found(
        "a fence on an unknown run",
        store
            .write_batch(&[StoreWrite::Fence {
                run_id: RunId::new(),
                epoch: 1,
            }])
            .await,
    );
}
