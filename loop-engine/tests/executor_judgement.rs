//! The engine asks the executor that ran a step what its outcome means
//! ([`Executor::judge`](loop_engine::backend::Executor::judge)), so a `ClaudeExecutor` injected
//! through the builder is judged exactly like the one `executor=claude` configures: a Claude
//! CLI that exits 0 without its final stream-json `result` line was interrupted, whichever way
//! the executor came in.
//!
//! A fake `claude` script stands in for the CLI. As root, `ClaudeExecutor` refuses to start it
//! unless the engine's own environment has `IS_SANDBOX=1`, and a test may not change its own
//! environment, so as root without it the test runs itself again as a child process with
//! `IS_SANDBOX=1` (as `real_claude` does).

use std::sync::Arc;
use std::time::Duration;

use loop_engine::domain::{ExitReason, Run, RunStatus, StepPhase};
use loop_engine::impls::ClaudeExecutor;
use loop_engine::process::{self, Cmd};

use crate::support::{Harness, Setup};

const CHILD_ENV: &str = "LOOP_JUDGEMENT_CHILD";
const TEST_NAME: &str =
    "executor_judgement::an_injected_claude_executor_is_judged_like_the_configured_one";

/// Does the task's work and commits it, then answers in plain text (no stream-json `result`
/// line) and exits 0: what an interrupted Claude CLI looks like.
const NO_RESULT_LINE: &str = r#"#!/bin/sh
plan=specs/planning/widget-plan.md
sed -i '0,/- \[ \]/s//- [x]/' "$plan"
echo "work $(date +%s%N)" >> work.txt
git add -A
git -c user.name=a -c user.email=a@b commit -qm 'agent: tick a task'
echo '<promise>COMPLETE</promise>'
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_claude_executor_is_judged_like_the_configured_one() {
    let root = process::effective_uid() == Some(0);
    let sandbox_ok = std::env::var("IS_SANDBOX").as_deref() == Ok("1");
    if root && !sandbox_ok && std::env::var_os(CHILD_ENV).is_none() {
        rerun_with_sandbox().await;
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let claude = dir.path().join("claude");
    std::fs::write(&claude, NO_RESULT_LINE).expect("fake claude");
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let claude = claude.display().to_string();

    let configured = Harness::without_executor(Setup {
        tasks: 1,
        config: vec![
            ("executor", "claude".into()),
            ("claude_bin", claude.clone()),
        ],
        ..Setup::default()
    });
    let injected = Harness::with_executor(
        Setup {
            tasks: 1,
            ..Setup::default()
        },
        Arc::new(ClaudeExecutor::new(claude)),
    );
    let by_config = outcome(&configured).await;
    let by_injection = outcome(&injected).await;

    assert_eq!(by_config.0, RunStatus::Failed, "{by_config:?}");
    assert_eq!(by_config.1, Some(ExitReason::ClaudeFailed), "{by_config:?}");
    assert!(
        by_config
            .2
            .iter()
            .all(|r| r.contains("without its final result line")),
        "{by_config:?}"
    );
    assert_eq!(by_injection, by_config);
}

/// The run's status and exit reason and its agent steps' reasons.
async fn outcome(h: &Harness) -> (RunStatus, Option<ExitReason>, Vec<String>) {
    let run: Run = h.run_one().await;
    let reasons = h
        .steps(run.id)
        .await
        .into_iter()
        .filter(|s| s.phase == StepPhase::Implementation)
        .map(|s| s.reason.unwrap_or_default())
        .collect();
    (run.status, run.exit_reason, reasons)
}

/// Runs this test again in a child process whose environment has `IS_SANDBOX=1`.
async fn rerun_with_sandbox() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Cmd::new(&exe, std::env::temp_dir())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env("IS_SANDBOX", "1")
        .env(CHILD_ENV, "1")
        .timeout(Some(Duration::from_secs(300)))
        .output()
        .await
        .expect("the test binary runs");
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    assert!(out.success(), "child run failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}
