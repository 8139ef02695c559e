//! The review flow of SPEC §12 against the real loopd on 127.0.0.1 with real git: the diff of
//! a 3-task run (commits, files, counts, a huge file cut, a binary file), a merge refused on
//! a conflict with nothing moved, one merge under two concurrent requests (and the worktree
//! cleaned up on merge), scrap, a pull request through a stand-in `gh` (and 503 without it),
//! actions refused while a run is active, and a failed run retried to completion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loop_engine::backend::{DiffLimits, FileStatus};
use loop_engine::domain::{ReviewStatus, RunId, RunStatus};
use loop_engine::testing::GitFixture;
use loop_http::ClientError;
use loop_http::api::{CreatePrRequestBody, MergeRequestBody, RunResource};
use nix::sys::signal::Signal;

use crate::{Daemon, create_request, free_port, signal, start, start_with_env, wait_terminal};

/// An agent whose three tasks leave a text file (and a changed README), a 1.3 MB file and a
/// binary file. `AGENT_SLEEP` slows each step down.
const REVIEW_AGENT: &str = r#"#!/bin/sh
set -e
sleep "${AGENT_SLEEP:-0}"
plan=specs/planning/widget-plan.md
task=$(grep -m1 -- '- \[ \]' "$plan" | sed 's/- \[ \] //')
[ -n "$task" ] || { echo '<promise>COMPLETE</promise>'; exit 0; }
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
case "$task" in
  "task 1") printf 'one\ntwo\nthree\n' > notes.txt; printf 'run version\n' > README.md ;;
  "task 2") seq 1 200000 > big.txt ;;
  "task 3") printf '\000\001\002\377binary\000' > blob.bin ;;
esac
git add -A
git -c user.name=agent -c user.email=agent@localhost commit -qm "Implement: $task"
if grep -q -- '- \[ \]' "$plan"; then echo "Completed $task."; else echo '<promise>COMPLETE</promise>'; fi
"#;

/// A repository with the review agent, a 3-task plan and `extra` config lines.
fn review_repo(extra: &str) -> GitFixture {
    let repo = GitFixture::new();
    let script = repo.root().join("review-agent.sh");
    std::fs::write(&script, REVIEW_AGENT).expect("script");
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\npostmortem=false\nrun_naming_mode=spec_slug\nartifact_mode=workspace\nexecutor=command\nagent_cmd=sh {}\n{extra}",
            script.display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file(
        "specs/planning/widget-plan.md",
        "- [ ] task 1\n- [ ] task 2\n- [ ] task 3\n",
    );
    repo.commit_all("spec and plan");
    repo
}

/// Creates a run and waits for its end.
async fn run_to_end(d: &Daemon, repo: &GitFixture) -> RunResource {
    let run = d
        .client
        .create_run(&create_request(repo))
        .await
        .expect("created")
        .run;
    wait_terminal(&d.client, run.id).await;
    d.client.get_run(run.id).await.expect("run")
}

async fn stop(mut d: Daemon) {
    signal(&d.child, Signal::SIGTERM);
    let _ = d.child.wait().await;
}

fn api_error(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api {
            status,
            code,
            message,
        } => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Every ref, HEAD, index, status and file of the primary checkout and of the run's worktree.
fn snapshot(repo: &GitFixture, worktree: &Path) -> Vec<String> {
    let mut s = Vec::new();
    for dir in [repo.path(), worktree] {
        s.push(repo.git_in(dir, ["rev-parse", "HEAD"]));
        s.push(repo.git_in(dir, ["symbolic-ref", "-q", "HEAD"]));
        s.push(repo.git_in(dir, ["ls-files", "-s"]));
        s.push(repo.git_in(dir, ["status", "--porcelain=v1", "--untracked-files=all"]));
        s.push(std::fs::read_to_string(dir.join("README.md")).unwrap_or_default());
    }
    s.push(repo.git(["for-each-ref", "--format=%(refname) %(objectname)"]));
    s.push(repo.git(["worktree", "list", "--porcelain"]));
    s.push(repo.git(["stash", "list"]));
    s
}

async fn review_events(d: &Daemon, id: RunId) -> Vec<serde_json::Value> {
    let mut events = d.client.events(id, None).await.expect("events");
    let mut out = Vec::new();
    // The stream of a terminal run ends after its stored events.
    while let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if ev.kind == "REVIEW_ACTION" || ev.kind == "RUN_RETRIED" {
            let mut v = ev.data["payload"].clone();
            v["kind"] = serde_json::Value::from(ev.kind.clone());
            out.push(v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diff_of_a_three_task_run_has_its_commits_files_and_bounds() {
    let repo = review_repo("merge_strategy=none\n");
    let data = tempfile::tempdir().expect("data");
    let d = start(data.path(), free_port()).await;
    let run = run_to_end(&d, &repo).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);

    let diff = d.client.diff(run.id, None).await.expect("diff");
    assert_eq!(diff.head_ref, "run/widget");
    assert_eq!(diff.base_ref, "main");
    assert_eq!(diff.diff.base_sha, repo.git(["rev-parse", "main"]));
    assert_eq!(diff.diff.head_sha, repo.git(["rev-parse", "run/widget"]));
    let subjects: Vec<&str> = diff
        .diff
        .commits
        .iter()
        .map(|c| c.message.as_str())
        .collect();
    // The engine's seed commit (the learnings file it creates) comes first.
    assert_eq!(
        subjects,
        [
            "Implement: task 3",
            "Implement: task 2",
            "Implement: task 1",
            "loop: seed spec and plan for run widget"
        ]
    );
    let first = &diff.diff.commits[2];
    assert_eq!(
        first.author,
        repo.git(["log", "-1", "--format=%an <%ae>", &first.sha])
    );
    assert!(first.timestamp > 1_600_000_000);
    let first_files: Vec<&str> = first.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        first_files,
        ["README.md", "notes.txt", "specs/planning/widget-plan.md"]
    );
    assert_eq!(first.stats.files_changed, 3);
    assert!(diff.diff.commits[0].files.iter().any(|f| f.binary));

    let file = |path: &str| {
        diff.diff
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} in {:?}", diff.diff.files))
    };
    let notes = file("notes.txt");
    assert_eq!(
        (notes.status, notes.additions, notes.deletions),
        (FileStatus::Added, 3, 0)
    );
    assert!(notes.patch.contains("+two\n"), "{}", notes.patch);
    assert!(!notes.truncated);
    let readme = file("README.md");
    assert_eq!(readme.status, FileStatus::Modified);
    assert!(
        readme.patch.contains("-# fixture\n+run version\n"),
        "{}",
        readme.patch
    );
    let blob = file("blob.bin");
    assert!(blob.binary && blob.status == FileStatus::Added);
    assert_eq!((blob.additions, blob.deletions), (0, 0));
    // The huge file: counted whole, its patch cut at the default 256 KiB.
    let big = file("big.txt");
    assert_eq!(big.additions, 200_000);
    assert!(big.truncated);
    assert!(big.patch.len() <= 256 * 1024, "{}", big.patch.len());
    assert!(big.patch.starts_with("diff --git a/big.txt b/big.txt\n"));
    assert!(diff.diff.truncated);
    let learnings = file("specs/LEARNINGS.md");
    assert_eq!(learnings.status, FileStatus::Added);
    assert_eq!(diff.diff.stats.files_changed, 6);
    assert_eq!(
        diff.diff.stats.additions,
        diff.diff.files.iter().map(|f| f.additions).sum::<u64>()
    );
    // notes 3, README 1, big 200,000, the plan's 3 ticks, and the learnings file.
    assert_eq!(
        diff.diff.stats.additions,
        3 + 1 + 200_000 + 3 + learnings.additions
    );
    assert_eq!(diff.diff.stats.deletions, 1 + 3);

    // Smaller limits: per file and in all.
    let small = d
        .client
        .diff(
            run.id,
            Some(DiffLimits {
                max_file_bytes: 4096,
                max_total_bytes: 5000,
                max_files: 100,
                max_commits: 2,
            }),
        )
        .await
        .expect("small diff");
    let total: usize = small.diff.files.iter().map(|f| f.patch.len()).sum();
    assert!(total <= 5000, "{total}");
    assert!(small.diff.files.iter().all(|f| f.patch.len() <= 4096));
    assert_eq!(small.diff.commits.len(), 2);
    assert!(small.diff.truncated);
    // The file list and the counts stay whole.
    assert_eq!(small.diff.files.len(), 6);
    assert_eq!(small.diff.stats, diff.diff.stats);
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_merge_is_refused_and_moves_nothing() {
    let repo = review_repo("merge_strategy=none\n");
    let data = tempfile::tempdir().expect("data");
    let d = start(data.path(), free_port()).await;
    let run = run_to_end(&d, &repo).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    // main moves on with its own README while the run's work waits for review.
    repo.commit_file("README.md", "main version\n", "edit readme on main");
    // Some uncommitted work of the user's, and some in the run's worktree.
    repo.write_file("scratch.txt", "mine\n");
    std::fs::write(run.worktree_path.join("leftover.txt"), "agent's\n").expect("leftover");
    let before = snapshot(&repo, &run.worktree_path);

    for (target, strategy) in [
        (None, None),
        (
            Some("main"),
            Some(loop_engine::domain::MergeStrategy::Merge),
        ),
    ] {
        let err = d
            .client
            .merge(
                run.id,
                &MergeRequestBody {
                    strategy,
                    target: target.map(str::to_owned),
                },
            )
            .await
            .expect_err("a conflict");
        let (status, code, message) = api_error(err);
        assert_eq!(
            (status, code.as_str()),
            (409, "merge_conflict"),
            "{message}"
        );
        assert!(
            message.contains("conflicts in README.md; nothing was merged"),
            "only the path is named: {message}"
        );
        assert!(message.contains(&run.id.to_string()), "{message}");
        assert_eq!(snapshot(&repo, &run.worktree_path), before, "nothing moved");
    }
    let after = d.client.get_run(run.id).await.expect("run");
    assert_eq!(after.review_status, ReviewStatus::Pending);
    assert_eq!(after.merge_commit, None);
    assert!(review_events(&d, run.id).await.is_empty());
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_merges_merge_once_and_the_worktree_goes() {
    let repo = review_repo("merge_strategy=none\nworktree_cleanup=on_merge\n");
    let data = tempfile::tempdir().expect("data");
    let d = start(data.path(), free_port()).await;
    let run = run_to_end(&d, &repo).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    // merge_strategy=none: the run merged nothing and kept its worktree.
    assert_eq!(run.review_status, ReviewStatus::Pending);
    assert!(run.worktree_path.is_dir());
    let main_before = repo.git(["rev-parse", "main"]);

    let req = MergeRequestBody::default();
    let (a, b) = tokio::join!(d.client.merge(run.id, &req), d.client.merge(run.id, &req));
    let (ok, refused) = match (a, b) {
        (Ok(ok), Err(e)) | (Err(e), Ok(ok)) => (ok, e),
        other => panic!("exactly one merge must succeed: {other:?}"),
    };
    let (status, _, message) = api_error(refused);
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("already merged"), "{message}");

    // merge_strategy=none leaves no merge target: the merge goes into the base branch, main,
    // which the primary checkout has checked out (clean): it moves along.
    let target_tip = repo.git(["rev-parse", "main"]);
    assert_eq!(ok.run.review_status, ReviewStatus::Merged);
    assert_eq!(ok.run.merge_commit.as_deref(), Some(target_tip.as_str()));
    assert!(ok.run.review_action_at_ms.is_some());
    // One squash commit with the run's trailer, on top of the old main.
    let log = repo.git(["log", "--format=%H %s", &format!("{main_before}..main")]);
    assert_eq!(log.lines().count(), 1, "{log}");
    let body = repo.git(["log", "-1", "--format=%B", "main"]);
    assert!(body.contains(&format!("Loop-Run-Id: {}", run.id)), "{body}");
    assert_eq!(
        repo.file_at("main", "notes.txt").as_deref(),
        Some("one\ntwo\nthree\n")
    );
    assert_eq!(repo.head(), target_tip);
    assert_eq!(
        std::fs::read_to_string(repo.path().join("notes.txt")).expect("checkout moved"),
        "one\ntwo\nthree\n"
    );
    assert!(
        ok.details.iter().any(|l| l.contains("your checkout")),
        "{:?}",
        ok.details
    );
    // worktree_cleanup=on_merge: the worktree is gone, the branch stays.
    assert!(!run.worktree_path.exists());
    assert!(
        ok.details.iter().any(|l| l.contains("removed")),
        "{:?}",
        ok.details
    );
    assert!(
        repo.git(["branch", "--list", "run/widget"])
            .contains("run/widget")
    );

    let events = review_events(&d, run.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "merge");
    assert_eq!(events[0]["review_status"], "merged");
    assert_eq!(events[0]["merge_commit"], target_tip.as_str());

    // The diff of a merged run is what its merge brought into the target.
    let diff = d.client.diff(run.id, None).await.expect("diff");
    assert_eq!(diff.head_ref, "main");
    assert_eq!(diff.diff.head_sha, target_tip);
    assert_eq!(diff.diff.base_sha, main_before);
    assert_eq!(diff.diff.commits.len(), 1);
    assert_eq!(diff.diff.stats.files_changed, 6);

    // A third request, later, is refused the same way; so is scrapping a merged run.
    let again = d.client.merge(run.id, &req).await.expect_err("merged once");
    assert_eq!(api_error(again).0, 409);
    assert_eq!(
        api_error(d.client.scrap(run.id).await.expect_err("merged")).0,
        409
    );
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrap_removes_the_worktree_and_branch_and_leaves_the_target() {
    let repo = review_repo("merge_strategy=none\n");
    repo.branch("agent/widget");
    let target_before = repo.git(["rev-parse", "agent/widget"]);
    let main_before = repo.git(["rev-parse", "main"]);
    let data = tempfile::tempdir().expect("data");
    let d = start(data.path(), free_port()).await;
    let run = run_to_end(&d, &repo).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    std::fs::write(run.worktree_path.join("uncommitted.txt"), "x\n").expect("write");

    let listed = d.client.worktrees(Some(repo.path())).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].present && !listed[0].prunable);
    assert!(listed[0].size_bytes.unwrap_or(0) > 1_000_000, "{listed:?}");

    let done = d.client.scrap(run.id).await.expect("scrapped");
    assert_eq!(done.run.review_status, ReviewStatus::Scrapped);
    assert!(!run.worktree_path.exists());
    assert!(repo.git(["branch", "--list", "run/widget"]).is_empty());
    assert_eq!(repo.git(["rev-parse", "agent/widget"]), target_before);
    assert_eq!(repo.git(["rev-parse", "main"]), main_before);
    assert!(
        done.details
            .iter()
            .any(|l| l == "merge target main untouched"),
        "{:?}",
        done.details
    );
    let listed = d.client.worktrees(Some(repo.path())).await.expect("list");
    assert!(!listed[0].present && listed[0].size_bytes.is_none());
    let events = review_events(&d, run.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "scrap");
    // Scrapped is final: no second scrap, no merge, no diff of a branch that is gone.
    assert_eq!(
        api_error(d.client.scrap(run.id).await.expect_err("again")).0,
        409
    );
    let merge = d.client.merge(run.id, &MergeRequestBody::default()).await;
    assert_eq!(api_error(merge.expect_err("scrapped")).0, 409);
    assert_eq!(
        api_error(d.client.diff(run.id, None).await.expect_err("gone")).0,
        404
    );
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_goes_through_gh_and_without_gh_is_503() {
    let repo = review_repo("merge_strategy=none\n");
    let data = tempfile::tempdir().expect("data");
    // Without gh on PATH (it is not installed here; the PATH is the usual one).
    let d = start(data.path(), free_port()).await;
    let run = run_to_end(&d, &repo).await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let err = d
        .client
        .create_pr(run.id, &CreatePrRequestBody::default())
        .await
        .expect_err("no gh");
    let (status, code, message) = api_error(err);
    assert_eq!((status, code.as_str()), (503, "tool_missing"), "{message}");
    assert!(message.contains("`gh`"), "{message}");
    assert_eq!(
        d.client.get_run(run.id).await.expect("run").review_status,
        ReviewStatus::Pending
    );
    stop(d).await;

    // A stand-in gh that records its arguments (NUL-separated) and prints an address.
    let bin = repo.root().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let args_file = repo.root().join("gh-args");
    let gh = bin.join("gh");
    std::fs::write(
        &gh,
        format!(
            "#!/bin/sh\nprintf '%s\\0' \"$@\" > {}\necho 'Creating pull request for run/widget into main'\necho https://github.com/example/widget/pull/42\n",
            args_file.display()
        ),
    )
    .expect("gh");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = start_with_env(data.path(), free_port(), &[("PATH", &path)]).await;
    let done = d
        .client
        .create_pr(
            run.id,
            &CreatePrRequestBody {
                draft: true,
                ..CreatePrRequestBody::default()
            },
        )
        .await
        .expect("pull request");
    assert_eq!(done.run.review_status, ReviewStatus::PrCreated);
    assert_eq!(
        done.run.pr_url.as_deref(),
        Some("https://github.com/example/widget/pull/42")
    );
    let recorded = std::fs::read_to_string(&args_file).expect("gh ran");
    let args: Vec<&str> = recorded.trim_end_matches('\0').split('\0').collect();
    assert_eq!(
        &args[..6],
        ["pr", "create", "--head", "run/widget", "--base", "main"]
    );
    assert_eq!(args[6], "--title");
    assert_eq!(args[7], "loop: widget (3 of 3 tasks)");
    assert_eq!(args[8], "--body");
    let body = args[9];
    for part in [
        "| Tasks | 3 of 3 done |",
        "| Iterations | 3",
        "| Cost | not reported by the agent |",
        "| Verification | none ran",
        "`run/widget` from `main`",
    ] {
        assert!(body.contains(part), "{part} in {body}");
    }
    assert_eq!(args[10], "--draft");
    let events = review_events(&d, run.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "create_pr");
    assert_eq!(
        events[0]["pr_url"],
        "https://github.com/example/widget/pull/42"
    );
    // At most one pull request per run.
    let again = d
        .client
        .create_pr(run.id, &CreatePrRequestBody::default())
        .await
        .expect_err("once");
    assert_eq!(api_error(again).0, 409);
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_wait_for_the_run_and_a_failed_run_is_retried_to_completion() {
    // Two iterations for three tasks: the run fails with its budget spent.
    let repo = review_repo("merge_strategy=none\niterations=2\n");
    let data = tempfile::tempdir().expect("data");
    let d = start_with_env(data.path(), free_port(), &[("AGENT_SLEEP", "1")]).await;
    let run = d
        .client
        .create_run(&create_request(&repo))
        .await
        .expect("created")
        .run;
    // While it runs, every action is refused and nothing is touched.
    for _ in 0..100 {
        if d.client.get_run(run.id).await.expect("run").status == RunStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for result in [
        d.client
            .merge(run.id, &MergeRequestBody::default())
            .await
            .map(|_| ()),
        d.client.scrap(run.id).await.map(|_| ()),
        d.client
            .create_pr(run.id, &CreatePrRequestBody::default())
            .await
            .map(|_| ()),
        d.client.retry(run.id).await.map(|_| ()),
    ] {
        let (status, _, message) = api_error(result.expect_err("refused while active"));
        assert_eq!(status, 409, "{message}");
        assert!(
            message.contains("RUNNING") || message.contains("PENDING"),
            "{message}"
        );
    }
    assert_eq!(wait_terminal(&d.client, run.id).await, RunStatus::Failed);
    let failed = d.client.get_run(run.id).await.expect("run");
    assert_eq!(failed.exit_reason.as_deref(), Some("iterations_exhausted"));
    assert_eq!((failed.tasks_done, failed.iterations_run), (2, 2));
    let steps_before = d.client.steps(run.id).await.expect("steps").len();

    let retried = d.client.retry(run.id).await.expect("retried");
    assert_eq!(retried.status, RunStatus::Pending);
    assert_eq!(retried.config["iterations"], 4, "two more iterations");
    assert_eq!(wait_terminal(&d.client, run.id).await, RunStatus::Completed);
    let done = d.client.get_run(run.id).await.expect("run");
    assert_eq!(done.exit_reason.as_deref(), Some("complete_plan"));
    assert_eq!(done.tasks_done, 3);
    assert_eq!(done.iterations_run, 3);
    assert_eq!(done.worktree_path, failed.worktree_path);
    // History kept: the first attempt's steps are still there, the new ones follow.
    let steps = d.client.steps(run.id).await.expect("steps");
    assert!(steps.len() > steps_before);
    // Each task committed once on the same branch.
    let log = repo.git(["log", "--format=%s", "main..run/widget"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "Implement: task 3",
            "Implement: task 2",
            "Implement: task 1",
            "loop: seed spec and plan for run widget"
        ]
    );
    let events = review_events(&d, run.id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "RUN_RETRIED");
    assert_eq!(events[0]["previous_status"], "FAILED");
    assert_eq!(events[0]["previous_exit_reason"], "iterations_exhausted");
    assert_eq!(events[0]["iterations"], 2);
    // A completed run is not retried.
    assert_eq!(
        api_error(d.client.retry(run.id).await.expect_err("completed")).0,
        409
    );
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktrees_of_reviewed_runs_are_pruned_and_others_kept() {
    // The run's own merge lands (squash into agent/widget): merged, so its worktree prunes.
    let repo = review_repo("");
    let data = tempfile::tempdir().expect("data");
    let d = start(data.path(), free_port()).await;
    let merged = run_to_end(&d, &repo).await;
    assert_eq!(merged.status, RunStatus::Completed, "{:?}", merged.failure);
    assert_eq!(merged.review_status, ReviewStatus::Merged);
    assert_eq!(
        merged.merge_commit.as_deref(),
        Some(repo.git(["rev-parse", "agent/widget"]).as_str())
    );
    // A second run of another plan, left unreviewed.
    repo.write_file("specs/other.md", "# Other\n");
    repo.write_file("specs/planning/other-plan.md", "- [ ] task 1\n");
    repo.commit_all("another spec");
    let mut req = create_request(&repo);
    req.spec_path = PathBuf::from("specs/other.md");
    let mut no_merge = serde_json::Map::new();
    no_merge.insert("merge_strategy".into(), serde_json::json!("none"));
    req.config_override = Some(no_merge);
    let other = d.client.create_run(&req).await.expect("created").run;
    wait_terminal(&d.client, other.id).await;

    let listed = d.client.worktrees(None).await.expect("list");
    let by_id = |id: RunId| listed.iter().find(|w| w.run_id == id).expect("listed");
    assert!(by_id(merged.id).prunable);
    assert!(!by_id(other.id).prunable);
    let report = d.client.prune_worktrees(None).await.expect("prune");
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].run_id, merged.id);
    assert!(!merged.worktree_path.exists());
    assert!(other.worktree_path.is_dir());
    let listed = d.client.worktrees(None).await.expect("list");
    assert!(!listed.iter().any(|w| w.prunable));
    stop(d).await;
}
