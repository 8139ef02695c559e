//! The merge never depends on the user's working tree: it lands without checking anything
//! out, moves a clean checkout that has the target checked out, and leaves a dirty one alone
//! with the run completed and the merge pending.

use loop_engine::domain::{EventKind, ExitReason, RunStatus};
use loop_engine::impls::SimulatedAgent;

use crate::support::{Harness, Setup};

fn setup(target: Option<&str>) -> Setup {
    let mut config = Vec::new();
    if let Some(target) = target {
        config.push(("merge_target_branch", target.to_owned()));
    }
    Setup {
        tasks: 2,
        config,
        ..Setup::default()
    }
}

fn status(h: &Harness) -> String {
    h.repo
        .git(["status", "--porcelain=v1", "--untracked-files=all"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_checkout_on_another_branch_gets_the_merge_and_stays_untouched() {
    let h = Harness::new(setup(None), SimulatedAgent::new());
    h.repo.branch("elsewhere");
    h.repo.checkout("elsewhere");
    let head = h.repo.head();
    h.repo
        .write_file("specs/widget.md", "# Widget\n\nmy unsaved edit\n");
    h.repo.write_file("notes.txt", "untracked\n");
    let before = status(&h);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    let target = run.merge_target_branch.clone().expect("target");
    assert!(h.repo.file_at(&target, "sim-work/task-005.txt").is_some());
    assert_eq!(
        h.repo.git(["rev-parse", "--abbrev-ref", "HEAD"]),
        "elsewhere"
    );
    assert_eq!(h.repo.head(), head);
    assert_eq!(status(&h), before);
    assert_eq!(
        std::fs::read_to_string(h.repo.path().join("specs/widget.md")).unwrap(),
        "# Widget\n\nmy unsaved edit\n"
    );
    let merge = h
        .events(run.id)
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::MergeDone)
        .expect("MERGE_DONE");
    assert_eq!(merge.payload["outcome"], "merged");
    assert!(merge.payload["checkout"].is_null(), "{}", merge.payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_checked_out_target_leaves_the_run_completed_with_the_merge_pending() {
    let h = Harness::new(setup(Some("main")), SimulatedAgent::new());
    let head = h.repo.head();
    h.repo
        .write_file("specs/widget.md", "# Widget\n\nmy unsaved edit\n");
    let before = status(&h);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    // Nothing merged, nothing lost.
    assert_eq!(h.repo.git(["rev-parse", "main"]), head);
    assert_eq!(status(&h), before);
    assert_eq!(
        std::fs::read_to_string(h.repo.path().join("specs/widget.md")).unwrap(),
        "# Widget\n\nmy unsaved edit\n"
    );
    assert!(
        h.repo
            .file_at(&run.run_branch, "sim-work/task-005.txt")
            .is_some()
    );
    let events = h.events(run.id).await;
    let pending = events
        .iter()
        .find(|e| e.kind == EventKind::MergePending)
        .expect("MERGE_PENDING");
    let reason = pending.payload["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("uncommitted changes"), "{reason}");
    assert!(reason.contains("specs/widget.md"), "{reason}");
    assert!(!events.iter().any(|e| e.kind == EventKind::MergeDone));
    let completed = events
        .iter()
        .find(|e| e.kind == EventKind::RunCompleted)
        .expect("RUN_COMPLETED");
    assert_eq!(completed.payload["merge_pending"], reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_checked_out_target_is_updated_and_the_user_is_told() {
    let h = Harness::new(setup(Some("main")), SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let tip = h.repo.git(["rev-parse", "main"]);
    assert_eq!(h.repo.head(), tip);
    assert_eq!(h.repo.git(["rev-parse", "--abbrev-ref", "HEAD"]), "main");
    assert!(h.repo.path().join("sim-work/task-005.txt").is_file());
    assert_eq!(status(&h), "");
    let merge = h
        .events(run.id)
        .await
        .into_iter()
        .find(|e| e.kind == EventKind::MergeDone)
        .expect("MERGE_DONE");
    let message = merge.payload["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("your checkout "), "{message}");
    assert!(message.contains("is now on main"), "{message}");
}
