//! Run creation refuses hostile input before anything is scheduled (issue 12 items 2, 3, 6, 7,
//! 9; issue 19 item 5): huge durations, FIFOs and devices as config or prompt files, symlinks
//! and `..` out of the workspace, bad branch names, misplaced log and worktree folders, and a
//! Claude executor that could not start as root. And a driver task that dies fails its run
//! and frees its slot (issue 12 item 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use loop_engine::backend::{
    ExecContext, ExecOutcome, ExecRequest, Executor, ExecutorError, RunFilter, Store,
};
use loop_engine::domain::{EventKind, ExitReason, RunStatus};
use loop_engine::engine::CreateRun;
use loop_engine::error::EngineError;
use loop_engine::impls::SimulatedAgent;

use crate::support::{Harness, Setup};

fn overrides(pairs: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Creates a run from `req` and returns the refusal's text; panics when it is accepted.
async fn refused(h: &Harness, req: CreateRun) -> String {
    let what = format!("{req:?}");
    h.engine
        .create_run(req)
        .await
        .map(|c| c.run.id)
        .expect_err(&format!("must be refused: {what}"))
        .to_string()
}

async fn assert_nothing_created(h: &Harness) {
    let runs = h
        .store
        .list_runs(&RunFilter::default())
        .await
        .expect("list");
    assert!(runs.is_empty(), "{runs:?}");
}

/// A folder next to the repository (outside the workspace) with a secret in it.
fn outside(h: &Harness) -> PathBuf {
    let dir = h.repo.root().join("outside");
    std::fs::create_dir_all(&dir).expect("outside dir");
    std::fs::write(dir.join("secret.md"), "- [ ] steal the secret\n").expect("secret");
    dir
}

fn symlink(target: &Path, link: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).expect("link parent");
    }
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_plans_and_prompts_that_escape_the_workspace_are_refused() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let out = outside(&h);
    let ws = h.repo.path();
    symlink(&out.join("secret.md"), &ws.join("specs/link.md"));
    symlink(&out, &ws.join("specs/ext"));
    symlink(
        &out.join("secret.md"),
        &ws.join("specs/planning/link-plan.md"),
    );
    for (spec, plan, key) in [
        ("specs/link.md", None, "spec_path"),
        ("specs/ext/secret.md", None, "spec_path"),
        ("../outside/secret.md", None, "spec_path"),
        (
            "specs/widget.md",
            Some("specs/planning/link-plan.md"),
            "plan_path",
        ),
        ("specs/widget.md", Some("specs/ext/secret.md"), "plan_path"),
    ] {
        let text = refused(
            &h,
            CreateRun {
                spec_path: spec.into(),
                plan_path: plan.map(PathBuf::from),
                ..h.request()
            },
        )
        .await;
        let given = plan.unwrap_or(spec);
        assert!(
            text.contains(key) && text.contains(given) && text.contains("outside"),
            "{given}: {text}"
        );
        assert!(text.contains(&out.display().to_string()), "{text}");
    }
    for (key, value) in [
        ("prompt_file", serde_json::json!("/etc/passwd")),
        ("prompt_file", serde_json::json!("specs/link.md")),
        ("context_files", serde_json::json!(["specs/ext/secret.md"])),
        ("log_dir", serde_json::json!("../elsewhere")),
        ("log_dir", serde_json::json!("/tmp/loop-logs-anywhere")),
    ] {
        let text = refused(
            &h,
            CreateRun {
                json_overrides: overrides(&[(key, value.clone())]),
                ..h.request()
            },
        )
        .await;
        assert!(
            text.contains(key) && text.contains("outside"),
            "{key}={value}: {text}"
        );
    }
    // A log folder that is a symlink out of the workspace is refused too.
    symlink(&out, &ws.join("logs-link"));
    let text = refused(
        &h,
        CreateRun {
            json_overrides: overrides(&[("log_dir", serde_json::json!("logs-link/loop"))]),
            ..h.request()
        },
    )
    .await;
    assert!(
        text.contains("log_dir") && text.contains("outside"),
        "{text}"
    );
    assert_nothing_created(&h).await;
    // The untouched request is fine.
    h.create().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktree_templates_outside_the_workspace_parent_are_refused() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    for template in [
        "/etc/{{ repo }}",
        "../../{{ repo }}.{{ run_branch | sanitize }}",
        ".",
    ] {
        let text = refused(
            &h,
            CreateRun {
                json_overrides: overrides(&[(
                    "worktree_path_template",
                    serde_json::json!(template),
                )]),
                ..h.request()
            },
        )
        .await;
        assert!(
            text.contains("worktree_path_template") && text.contains(template),
            "{template}: {text}"
        );
    }
    assert_nothing_created(&h).await;
    // Inside the parent (the default) and inside the workspace are fine.
    let run = h.create().await;
    assert!(run.worktree_path.starts_with(h.repo.root()), "{run:?}");
    let created = h
        .engine
        .create_run(CreateRun {
            json_overrides: overrides(&[(
                "worktree_path_template",
                serde_json::json!(".worktrees/{{ run_branch | sanitize }}"),
            )]),
            ..h.request()
        })
        .await
        .expect("inside the workspace");
    assert!(created.run.worktree_path.starts_with(h.repo.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_branch_names_are_refused_with_the_key_and_the_rule() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    for (key, value) in [
        ("merge_target_branch", "../../x"),
        ("merge_target_branch", "HEAD"),
        ("merge_target_branch", "--upload-pack=touch /tmp/pwned"),
        ("run_branch_prefix", "-x/"),
        ("base_branch", "--output=/tmp/x"),
        ("base_branch", "main..dev"),
    ] {
        let text = refused(
            &h,
            CreateRun {
                json_overrides: overrides(&[(key, serde_json::json!(value))]),
                ..h.request()
            },
        )
        .await;
        assert!(
            text.contains(key) && text.contains(value) && text.contains("branch name"),
            "{key}={value}: {text}"
        );
    }
    // The request's own merge target field is held to the same rule.
    for value in ["HEAD", "-x", "a..b", "refs/heads/x:y"] {
        let text = refused(
            &h,
            CreateRun {
                merge_target_branch: Some(value.into()),
                ..h.request()
            },
        )
        .await;
        assert!(
            text.contains("merge_target_branch") && text.contains(value),
            "{value}: {text}"
        );
    }
    assert_nothing_created(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_refused_with_the_key_and_the_limit() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    for key in [
        "heartbeat_sec",
        "claude_timeout_sec",
        "claude_idle_timeout_sec",
        "verify_timeout_sec",
        "claude_retry_backoff_sec",
        "claude_transient_backoff_max_sec",
        "warn_iteration_sec",
    ] {
        let limit = loop_engine::config::key_spec(key)
            .and_then(|s| s.max())
            .expect("a maximum");
        for value in [
            serde_json::json!(1u64 << 63),
            serde_json::json!(u64::MAX),
            serde_json::json!(limit + 1),
        ] {
            let text = refused(
                &h,
                CreateRun {
                    json_overrides: overrides(&[(key, value.clone())]),
                    ..h.request()
                },
            )
            .await;
            assert!(
                text.contains(key) && text.contains(&limit.to_string()),
                "{key}={value}: {text}"
            );
        }
    }
    assert_nothing_created(&h).await;
}

async fn mkfifo(path: &Path) {
    let made = loop_engine::process::Cmd::new("mkfifo", "/")
        .arg(path)
        .output()
        .await
        .expect("mkfifo runs");
    assert!(
        made.success(),
        "mkfifo {}: {}",
        path.display(),
        made.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_and_devices_as_config_or_prompt_are_refused_without_blocking() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let fifo = h.repo.root().join("config.fifo");
    mkfifo(&fifo).await;
    let started = Instant::now();
    // Two requests naming the FIFO and one ordinary request, at once: all answer.
    let fifo_req = || CreateRun {
        config_file: Some(fifo.clone()),
        ..h.request()
    };
    let (a, b, c) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(
            h.engine.create_run(fifo_req()),
            h.engine.create_run(fifo_req()),
            h.engine.create_run(h.request()),
        )
    })
    .await
    .expect("no request hangs on the FIFO");
    for result in [a, b] {
        let text = result
            .map(|c| c.run.id)
            .expect_err("FIFO refused")
            .to_string();
        assert!(
            text.contains("config_file") && text.contains("FIFO"),
            "{text}"
        );
        assert!(text.contains(&fifo.display().to_string()), "{text}");
    }
    c.expect("the ordinary request is served");
    // A committed `.loop/config` that points at /dev/zero is refused at once.
    let config = h.repo.path().join(".loop/config");
    std::fs::remove_file(&config).expect("remove config");
    symlink(Path::new("/dev/zero"), &config);
    let started_zero = Instant::now();
    let text = refused(&h, h.request()).await;
    assert!(
        text.contains(".loop/config") && text.contains("character device"),
        "{text}"
    );
    assert!(
        started_zero.elapsed() < Duration::from_secs(2),
        "{:?}",
        started_zero.elapsed()
    );
    std::fs::remove_file(&config).expect("remove link");
    // A prompt file that is a FIFO, or too large, is refused naming it.
    let prompt_fifo = h.repo.path().join("prompt.fifo");
    mkfifo(&prompt_fifo).await;
    let big = h.repo.path().join("big-prompt.txt");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).expect("big prompt");
    for (file, reason) in [(&prompt_fifo, "FIFO"), (&big, "bytes")] {
        let req = CreateRun {
            json_overrides: overrides(&[("prompt_file", serde_json::json!(file))]),
            ..h.request()
        };
        let err = tokio::time::timeout(Duration::from_secs(10), h.engine.preview_prompt(&req))
            .await
            .expect("no hang")
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("prompt_file") && text.contains(reason),
            "{text}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_run_that_could_not_start_as_root_is_refused_at_creation() {
    let h = Harness::without_executor(Setup {
        config: vec![("executor", "claude".into())],
        ..Setup::default()
    });
    let result = h.engine.create_run(h.request()).await;
    // The test cannot change its own environment, so it checks the rule for the environment
    // it runs in: as root without IS_SANDBOX=1 the run is refused, naming what to set.
    let is_root = loop_engine::process::effective_uid() == Some(0);
    let sandbox = std::env::var("IS_SANDBOX").ok();
    if is_root && sandbox.as_deref() != Some("1") {
        let err = result.map(|c| c.run.id).expect_err("refused as root");
        assert!(
            matches!(err, EngineError::InvalidInput { ref field, .. } if field == "IS_SANDBOX")
        );
        let text = err.to_string();
        assert!(text.contains("export IS_SANDBOX=1"), "{text}");
        assert!(loop_engine::engine::sandbox_problem().is_some());
        assert_nothing_created(&h).await;
    } else {
        result.expect("accepted");
        assert!(loop_engine::engine::sandbox_problem().is_none());
    }
    // Other executors are not concerned.
    let h = Harness::without_executor(Setup {
        config: vec![("executor", "simulate".into())],
        ..Setup::default()
    });
    h.create().await;
}

/// Delegates to the simulated agent, but panics on its first call: a driver task dying.
struct PanicsOnce {
    fired: AtomicBool,
    agent: SimulatedAgent,
}

#[async_trait]
impl Executor for PanicsOnce {
    async fn execute(
        &self,
        req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        if !self.fired.swap(true, Ordering::SeqCst) {
            panic!("injected driver panic");
        }
        self.agent.execute(req, ctx).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_task_that_panics_fails_its_run_and_frees_its_slot() {
    let executor = Arc::new(PanicsOnce {
        fired: AtomicBool::new(false),
        agent: SimulatedAgent::new(),
    });
    let h = Harness::with_executor(
        Setup {
            tasks: 1,
            max_concurrency: 1,
            ..Setup::default()
        },
        executor,
    );
    let first = h.create().await;
    h.drive().await;
    let first = h.engine.get_run(first.id).await.expect("run");
    assert_eq!(first.status, RunStatus::Failed, "{first:?}");
    assert_eq!(first.exit_reason, Some(ExitReason::Failed));
    let failure = first.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("panicked") && failure.contains("injected driver panic"),
        "{failure}"
    );
    assert!(h.kinds(first.id).await.contains(&EventKind::RunFailed));
    // Its slot is free, its steps are closed, and a cancel answers from the terminal state.
    assert!(h.engine.running_runs().is_empty());
    assert!(
        h.steps(first.id)
            .await
            .iter()
            .all(|s| s.status.is_terminal())
    );
    assert!(matches!(
        h.engine.cancel(first.id).await,
        Err(EngineError::InvalidState { .. })
    ));
    // The next run (one slot only) proceeds to the end.
    let second = h.run_one().await;
    assert_eq!(second.status, RunStatus::Completed, "{second:?}");
}

fn implementation_steps(steps: &[loop_engine::domain::Step]) -> usize {
    steps
        .iter()
        .filter(|s| s.phase == loop_engine::domain::StepPhase::Implementation)
        .count()
}

/// Two runs of one spec queued together: the second starts after the first merged its ticked
/// plan into the checked-out branch, yet works from the plan as it was when it was created.
/// A run created with nothing left to do ends `plan_already_done` without an agent step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_of_one_spec_work_from_their_own_plan_snapshot() {
    let h = Harness::new(
        Setup {
            tasks: 2,
            max_concurrency: 1,
            ..Setup::default()
        },
        SimulatedAgent::new(),
    );
    let into_main = || CreateRun {
        merge_target_branch: Some("main".into()),
        ..h.request()
    };
    let first = h.engine.create_run(into_main()).await.expect("first").run;
    let second = h.engine.create_run(into_main()).await.expect("second").run;
    let snapshot = h
        .repo
        .path()
        .join("logs/loop")
        .join(format!("run-{}", second.id))
        .join("plan.snapshot.md");
    assert_eq!(
        std::fs::read_to_string(&snapshot).expect("snapshot"),
        crate::support::plan(2)
    );
    h.drive().await;
    let first = h.engine.get_run(first.id).await.expect("first");
    let second = h.engine.get_run(second.id).await.expect("second");
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    // The first run's ticks reached main (and the checkout) before the second started.
    let on_main = h.repo.git(["show", "main:specs/planning/widget-plan.md"]);
    assert!(!on_main.contains("- [ ] Task"), "{on_main}");
    assert_eq!(second.status, RunStatus::Completed, "{second:?}");
    assert_eq!(
        second.exit_reason,
        Some(ExitReason::CompletePlan),
        "{second:?}"
    );
    assert!(
        implementation_steps(&h.steps(second.id).await) >= 2,
        "the second run worked its tasks"
    );
    // Now the workspace's plan is done: a new run has nothing to do and says so.
    let third = h.engine.create_run(h.request()).await.expect("third").run;
    assert_eq!((third.tasks_done, third.tasks_total), (2, 2));
    h.drive().await;
    let third = h.engine.get_run(third.id).await.expect("third");
    assert_eq!(third.status, RunStatus::Failed, "{third:?}");
    assert_eq!(third.exit_reason, Some(ExitReason::PlanAlreadyDone));
    let failure = third.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("no open task") && failure.contains("2 of 2"),
        "{failure}"
    );
    assert_eq!(implementation_steps(&h.steps(third.id).await), 0);
}

/// A run stored before the duration limits existed (or written by hand) with a huge duration
/// does not panic its driver: it fails at start, naming the key and the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_run_with_a_huge_duration_fails_at_start_without_a_panic() {
    let h = Harness::new(Setup::default(), SimulatedAgent::new());
    let mut run = h.create().await;
    run.config["heartbeat_sec"] = serde_json::json!(1u64 << 63);
    h.store.update_run(&run).await.expect("stored");
    h.drive().await;
    let run = h.engine.get_run(run.id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let failure = run.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("heartbeat_sec") && failure.contains("86400"),
        "{failure}"
    );
    assert!(h.engine.running_runs().is_empty());
    assert_eq!(h.steps(run.id).await.len(), 0);
}
