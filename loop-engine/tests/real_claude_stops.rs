//! Issue 13 end to end with the real Claude Code CLI against the scripted model (as in
//! `real_claude.rs`): every scenario counts the model requests and agent calls it paid for.
//!
//! - a stalled model bounds the naming call by `claude_idle_timeout_sec` (was a fixed 120 s),
//!   and the naming call reaches the model without tools;
//! - a malformed completion on a finished plan makes no extra call;
//! - empty answers end the run `no_progress` within 8 calls (was 50 and more);
//! - a cost budget below one step's cost stops after exactly one call;
//! - a usage limit (Claude Code logged in with a subscription, a 429 with the
//!   `anthropic-ratelimit-unified-*` headers) is waited out, then the run completes.
//!
//! Skips without the CLI unless `LOOP_REQUIRE_CLAUDE=1`; as root it re-runs itself with
//! `IS_SANDBOX=1`.

#![expect(
    clippy::print_stderr,
    reason = "the scenarios print their counts and wall times for the test log"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use loop_engine::domain::{ExitReason, Run, RunStatus, StepPhase, StepStatus};
use loop_engine::impls::ClaudeExecutor;
use scripted_model::{ModelServer, Script, ToolCall, Turn, When};

use crate::support::{Harness, Setup};

const TEST_NAME: &str = "real_claude_stops::real_claude_stops_spending";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_stops_spending() {
    let claude = match scripted_model::cli::claude_for_test() {
        scripted_model::cli::ClaudeForTest::Found(bin) => bin,
        scripted_model::cli::ClaudeForTest::Skip(why) => {
            scripted_model::cli::say_skipped("real_claude_stops_spending", &why);
            return;
        }
        scripted_model::cli::ClaudeForTest::Required(why) => panic!("{why}"),
    };
    let bin = claude.display().to_string();
    if crate::support::rerun_with_sandbox(TEST_NAME, &[("CLAUDE_BIN", bin.as_str())]).await {
        return;
    }
    timed("a) stalled naming call", stalled_naming(&claude)).await;
    timed(
        "b) malformed completion, finished plan",
        malformed_on_finished_plan(&claude),
    )
    .await;
    timed("c) empty answers", empty_answers(&claude)).await;
    timed("d) cost budget", cost_budget(&claude)).await;
    timed("e) usage limit", usage_limit(&claude)).await;
}

async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    scenario.await;
    eprintln!("real_claude_stops: {name}: {:.1?}", started.elapsed());
}

/// A harness whose engine runs the real CLI against `server` (`subscription`: logged in with
/// an OAuth token instead of an API key, as a Claude subscriber is).
fn harness(
    claude: &Path,
    server: &ModelServer,
    dir: &Path,
    tasks: usize,
    subscription: bool,
    config: Vec<(&'static str, String)>,
) -> Harness {
    let path = dir.join("claude-wrapper.sh");
    let mut script = scripted_model::cli::Wrapper {
        claude: claude.to_path_buf(),
        base_url: server.base_url(),
        home: Some(dir.join("home")),
        isolated_git: true,
        exports: vec![("IS_SANDBOX".into(), "1".into())],
    }
    .script();
    if subscription {
        script = script.replace(
            "export ANTHROPIC_API_KEY=test\n",
            "unset ANTHROPIC_API_KEY\nexport CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-scripted\n",
        );
    }
    std::fs::create_dir_all(dir.join("home")).expect("home");
    std::fs::write(&path, script).expect("wrapper");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut all = vec![
        ("claude_max_retries", "0".to_owned()),
        ("claude_timeout_sec", "60".to_owned()),
        ("claude_retry_backoff_sec", "0".to_owned()),
        ("model", "opus".to_owned()),
    ];
    all.extend(config);
    Harness::new(
        Setup {
            tasks,
            config: all,
            ..Setup::default()
        },
        ClaudeExecutor::new(path.display().to_string()),
    )
}

async fn steps_of(h: &Harness, run: &Run, phase: StepPhase) -> usize {
    h.steps(run.id)
        .await
        .iter()
        .filter(|s| s.phase == phase)
        .count()
}

async fn stalled_naming(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ModelServer::start(Script::always(Turn::PlanAgent).rule(When::Naming, Turn::Stall, None))
            .expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        1,
        false,
        vec![
            ("run_naming_mode", "haiku".into()),
            ("claude_idle_timeout_sec", "4".into()),
        ],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.name_source.to_string(), "spec_slug");
    let steps = h.steps(run.id).await;
    let naming = steps
        .iter()
        .find(|s| s.phase == StepPhase::Naming)
        .expect("naming step");
    assert_eq!(naming.status, StepStatus::Failed);
    let took = naming.ended_at.unwrap_or(0) - naming.started_at.unwrap_or(0);
    eprintln!(
        "real_claude_stops: a) naming took {took} ms: {:?}",
        naming.reason
    );
    assert!(
        naming
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("idle timeout"),
        "{naming:?}"
    );
    // Bounded by the idle timeout (4 s), nowhere near the old fixed 120 s.
    assert!(took < 30_000, "{took} ms");
    // The naming request carried no tools.
    let naming_req = server
        .messages_requests()
        .into_iter()
        .find(|r| r.answer == "stall")
        .expect("the naming request");
    let body: serde_json::Value = serde_json::from_str(&naming_req.body).expect("JSON body");
    let tools = body
        .get("tools")
        .and_then(|t| t.as_array())
        .map_or(0, Vec::len);
    assert_eq!(tools, 0, "the naming call has no tools: {}", body["tools"]);
    server.shutdown().await;
}

async fn malformed_on_finished_plan(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    // One step ticks the only task, commits, and answers the token in a form `exact` mode
    // does not accept.
    let finish = Turn::ToolUse {
        calls: vec![ToolCall::bash(
            "sed -i 's/- \\[ \\] Task/- [x] Task/' specs/planning/widget-plan.md && \
             git add -A && git commit -qm 'Task number 1'",
        )],
        then: Some("All tasks are done. <promise>COMPLETE</promise> Bye.".into()),
    };
    let server =
        ModelServer::start(Script::always(Turn::Text("unexpected call".into())).then(finish))
            .expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        1,
        false,
        vec![("completion_mode", "exact".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.exit_reason, Some(ExitReason::CompletePlan));
    let calls = steps_of(&h, &run, StepPhase::Implementation).await;
    let requests = server.messages_requests().len();
    eprintln!("real_claude_stops: b) {calls} agent call(s), {requests} model requests");
    assert_eq!(calls, 1);
    assert_eq!(
        requests, 2,
        "the tool call and the final answer, nothing more"
    );
    assert!(
        h.report_kinds(&run)
            .iter()
            .any(|k| k == "WARN_MALFORMED_COMPLETE")
    );
    server.shutdown().await;
}

async fn empty_answers(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ModelServer::start(Script::always(Turn::Text(String::new()))).expect("model server starts");
    let h = harness(claude, &server, dir.path(), 3, false, Vec::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(
        run.exit_reason,
        Some(ExitReason::NoProgress),
        "{:?}",
        run.failure
    );
    let calls = steps_of(&h, &run, StepPhase::Implementation).await;
    eprintln!(
        "real_claude_stops: c) {calls} agent calls, {} model requests: {:?}",
        server.messages_requests().len(),
        run.failure
    );
    assert!(calls <= 8, "{calls} calls");
    server.shutdown().await;
}

async fn cost_budget(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        3,
        false,
        vec![("max_cost_usd", "0.001".into())],
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.exit_reason,
        Some(ExitReason::BudgetExhausted {
            kind: "cost".into()
        }),
        "{:?}",
        run.failure
    );
    let calls = steps_of(&h, &run, StepPhase::Implementation).await;
    eprintln!(
        "real_claude_stops: d) {calls} agent call(s): {:?}",
        run.failure
    );
    assert_eq!(calls, 1);
    assert_eq!(
        server.messages_requests().len(),
        2,
        "one step: a tool call and its answer"
    );
    server.shutdown().await;
}

async fn usage_limit(claude: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        ModelServer::start(Script::plan_agent().then(Turn::UsageLimit { reset_in_sec: 3 }))
            .expect("model server starts");
    let h = harness(
        claude,
        &server,
        dir.path(),
        1,
        true,
        vec![
            ("claude_retries", "0".into()),
            ("claude_transient_retries", "0".into()),
        ],
    );
    let started = Instant::now();
    let run = h.run_one().await;
    let took = started.elapsed();
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    let wait = steps
        .iter()
        .find(|s| s.phase == StepPhase::UsageWait)
        .expect("the run waited for the reset");
    eprintln!(
        "real_claude_stops: e) waited {} ms ({took:.1?} in all), {} agent calls",
        wait.ended_at.unwrap_or(0) - wait.started_at.unwrap_or(0),
        steps
            .iter()
            .filter(|s| s.phase == StepPhase::Implementation)
            .count()
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(h.report_kinds(&run).iter().any(|k| k == "USAGE_LIMIT_WAIT"));
    let first = steps
        .iter()
        .find(|s| s.phase == StepPhase::Implementation)
        .expect("an implementation step");
    assert_eq!(first.status, StepStatus::Retrying, "{first:?}");
    server.shutdown().await;
}
