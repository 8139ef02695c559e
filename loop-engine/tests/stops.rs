//! Issue 13 through the whole engine (real git, scripted agents): no agent call is spent that
//! cannot help. Steps without progress end `no_progress`, budgets stop a run right after the
//! step that spent them, a usage limit is waited out instead of retried, `setup_cmds` run
//! before the first call, a timeout names the API error behind it, and the naming call only
//! takes a short label. Each test counts the agent calls it paid for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use loop_engine::backend::{
    AgentResult, ExecContext, ExecOutcome, ExecPurpose, ExecRequest, ExecSignal, Executor,
    ExecutorError, Store, Termination,
};
use loop_engine::domain::{
    AgentUsage, ArtifactKind, EventKind, ExitReason, Run, RunStatus, StepPhase, StepStatus,
};
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

fn agent_calls(exec: &ScriptedExecutor) -> usize {
    exec.received()
        .iter()
        .filter(|r| r.purpose != ExecPurpose::Naming)
        .count()
}

fn failure(run: &Run) -> String {
    run.failure.clone().unwrap_or_default()
}

/// An answer that changes nothing and costs `cost` dollars and `tokens` tokens.
fn costly_reply(cost: f64, tokens: u64) -> Act {
    Act::Custom(Arc::new(move |_req: &ExecRequest| ExecOutcome {
        exit_code: 0,
        termination: Some(Termination::Exited),
        output_text: "Looked around; nothing to do.".into(),
        result: Some(AgentResult {
            subtype: Some("success".into()),
            text: "Looked around; nothing to do.".into(),
            usage: AgentUsage {
                input_tokens: Some(tokens / 2),
                output_tokens: Some(tokens - tokens / 2),
                cost_usd: Some(cost),
                ..AgentUsage::default()
            },
            ..AgentResult::default()
        }),
        ..ExecOutcome::default()
    }))
}

/// What Claude Code ends with when the account's usage limit is reached, resetting in
/// `reset_in` seconds (see `impls::stream_json`'s usage-limit test for the CLI's lines).
fn usage_limit(reset_in: i64) -> Act {
    Act::Custom(Arc::new(move |_req: &ExecRequest| {
        let resets_at = loop_engine::domain::now_ms() / 1000 + reset_in;
        ExecOutcome {
            exit_code: 1,
            termination: Some(Termination::Exited),
            output_text: "You've hit your 5-hour limit".into(),
            result: Some(AgentResult {
                subtype: Some("success".into()),
                is_error: true,
                text: "You've hit your 5-hour limit".into(),
                api_error_status: Some(429),
                api_error: Some("usage_limit_reached".into()),
                usage_limit_resets_at: Some(resets_at),
                ..AgentResult::default()
            }),
            ..ExecOutcome::default()
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_answers_end_the_run_no_progress_after_the_watchdogs_rewrites() {
    // Defaults: the watchdog rewrites after 3 steps without progress, at most twice, and
    // max_no_progress_steps=3. Before issue 13 this ran to iterations_exhausted.
    let exec = ScriptedExecutor::new(
        (0..7).map(|_| (ExecPurpose::Implementation, Act::Reply(String::new()))),
    );
    let h = Harness::new(Setup::default(), exec.clone());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.exit_reason, Some(ExitReason::NoProgress));
    let f = failure(&run);
    assert!(
        f.contains("7 implementation steps") && f.contains("max_no_progress_steps=3"),
        "{f}"
    );
    assert_eq!(agent_calls(&exec), 7);
    let rewrites = h
        .steps(run.id)
        .await
        .iter()
        .filter(|s| s.phase == StepPhase::Watchdog)
        .count();
    assert_eq!(rewrites, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_budget_below_one_steps_cost_stops_after_exactly_one_call() {
    let exec = ScriptedExecutor::new(vec![(
        ExecPurpose::Implementation,
        costly_reply(0.25, 1000),
    )]);
    let h = Harness::new(
        Setup {
            config: vec![("max_cost_usd", "0.10".into())],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.exit_reason,
        Some(ExitReason::BudgetExhausted {
            kind: "cost".into()
        })
    );
    assert_eq!(
        run.exit_reason.as_ref().map(ToString::to_string).as_deref(),
        Some("budget_exhausted:cost")
    );
    let f = failure(&run);
    assert!(
        f.contains("$0.2500") && f.contains("max_cost_usd=$0.1000"),
        "{f}"
    );
    assert_eq!(agent_calls(&exec), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_budget_counts_retries() {
    // Two failed attempts of 600 tokens each: the retry is paid for and counts.
    let fail_costly = || {
        Act::Custom(Arc::new(|_req: &ExecRequest| ExecOutcome {
            exit_code: 1,
            termination: Some(Termination::Exited),
            output_text: "boom".into(),
            result: Some(AgentResult {
                is_error: true,
                text: "boom".into(),
                usage: AgentUsage {
                    input_tokens: Some(500),
                    output_tokens: Some(100),
                    ..AgentUsage::default()
                },
                ..AgentResult::default()
            }),
            ..ExecOutcome::default()
        }))
    };
    let exec = ScriptedExecutor::new(vec![
        (ExecPurpose::Implementation, fail_costly()),
        (ExecPurpose::Implementation, fail_costly()),
    ]);
    let h = Harness::new(
        Setup {
            config: vec![
                ("max_tokens", "1000".into()),
                ("claude_retries", "3".into()),
            ],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(
        run.exit_reason,
        Some(ExitReason::BudgetExhausted {
            kind: "tokens".into()
        })
    );
    assert!(
        failure(&run).contains("used 1200 tokens of max_tokens=1000"),
        "{}",
        failure(&run)
    );
    // 2 calls, not the 4 claude_retries=3 allows.
    assert_eq!(agent_calls(&exec), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_is_waited_out_and_the_same_call_made_again() {
    let exec = ScriptedExecutor::new(vec![
        (ExecPurpose::Implementation, usage_limit(2)),
        (ExecPurpose::Implementation, Act::Agent),
    ])
    .then_agent();
    let h = Harness::new(
        Setup {
            tasks: 1,
            // No retry at all: the wait must not need one.
            config: vec![("claude_retries", "0".into())],
            ..Setup::default()
        },
        exec.clone(),
    );
    let started = Instant::now();
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(agent_calls(&exec), 2);
    let steps = h.steps(run.id).await;
    let wait = steps
        .iter()
        .find(|s| s.phase == StepPhase::UsageWait)
        .expect("a usage_wait step");
    assert!(wait.ended_at > wait.started_at, "{wait:?}");
    let kinds = h.report_kinds(&run);
    assert!(kinds.iter().any(|k| k == "USAGE_LIMIT_WAIT"), "{kinds:?}");
    let events = h.events(run.id).await;
    let ev = events
        .iter()
        .find(|e| e.kind == EventKind::UsageLimitWait)
        .expect("USAGE_LIMIT_WAIT event");
    assert!(ev.payload.to_string().contains("until="), "{}", ev.payload);
    // The attempt that hit the limit is retried, not failed, and no retry was used.
    assert!(steps.iter().any(|s| s.status == StepStatus::Retrying));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_limit_past_usage_limit_wait_max_sec_fails_with_the_reason() {
    let exec = ScriptedExecutor::new(vec![(ExecPurpose::Implementation, usage_limit(3600))]);
    let h = Harness::new(
        Setup {
            config: vec![("usage_limit_wait_max_sec", "60".into())],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let f = failure(&run);
    assert!(
        f.contains("usage limit") && f.contains("usage_limit_wait_max_sec=60"),
        "{f}"
    );
    assert_eq!(agent_calls(&exec), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_cmds_run_once_before_the_first_agent_call() {
    let exec = ScriptedExecutor::new(vec![(
        ExecPurpose::Implementation,
        // The agent finds the setup's file in its worktree.
        Act::ShellThenAgent("test -f .env.local".into()),
    )])
    .then_agent();
    let h = Harness::new(
        Setup {
            tasks: 2,
            config: vec![(
                "setup_cmds",
                "echo KEY=1 > .env.local | echo installed".into(),
            )],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let steps = h.steps(run.id).await;
    let setup: Vec<_> = steps
        .iter()
        .filter(|s| s.phase == StepPhase::Setup)
        .collect();
    assert_eq!(setup.len(), 1);
    assert_eq!(setup[0].status, StepStatus::Succeeded);
    let artifacts = h.store.list_artifacts(run.id).await.expect("artifacts");
    let logs = artifacts
        .iter()
        .filter(|a| a.kind == ArtifactKind::SetupLog)
        .count();
    // Two commands, each in the workspace and mirrored.
    assert_eq!(logs, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_command_fails_the_run_before_any_agent_call() {
    let exec = ScriptedExecutor::new(Vec::new());
    let h = Harness::new(
        Setup {
            config: vec![(
                "setup_cmds",
                "echo ok | echo 'npm ERR! missing package.json'; exit 3 | echo never".into(),
            )],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_reason, Some(ExitReason::SetupFailed));
    let f = failure(&run);
    assert!(
        f.contains("exit 3") && f.contains("exited with 3") && f.contains("npm ERR!"),
        "{f}"
    );
    assert_eq!(agent_calls(&exec), 0);
}

/// An agent the CLI would be: it retries an API call (401, `authentication_failed`) until its
/// step's timeout stops it.
struct RetryingUntilTimeout;

#[async_trait]
impl Executor for RetryingUntilTimeout {
    async fn execute(
        &self,
        _req: ExecRequest,
        ctx: ExecContext,
    ) -> Result<ExecOutcome, ExecutorError> {
        for attempt in 1..=6 {
            let _ = ctx.signals.send(ExecSignal::ApiRetry {
                attempt: Some(attempt),
                max_retries: Some(10),
                delay_ms: Some(500),
                error_status: Some(401),
                error: Some("authentication_failed".into()),
            });
        }
        Ok(ExecOutcome {
            exit_code: 124,
            termination: Some(Termination::TimedOut),
            duration_ms: 20_000,
            ..ExecOutcome::default()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_the_api_error_the_agent_kept_retrying() {
    let h = Harness::new(Setup::default(), RetryingUntilTimeout);
    let run = h.run_one().await;
    assert_eq!(run.exit_reason, Some(ExitReason::ClaudeFailed));
    let f = failure(&run);
    assert!(
        f.contains("timed out after 20 s (exit 124); last API error: authentication_failed (HTTP 401), retry 6 by the CLI"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naming_answer_that_is_no_label_falls_back_to_the_spec_slug() {
    let exec = ScriptedExecutor::new(vec![(
        ExecPurpose::Naming,
        Act::Reply("Blocked: the plan update failed (no-plan-file)".into()),
    )])
    .then_agent();
    let h = Harness::new(
        Setup {
            tasks: 1,
            config: vec![
                ("run_naming_mode", "haiku".into()),
                ("claude_idle_timeout_sec", "7".into()),
            ],
            ..Setup::default()
        },
        exec.clone(),
    );
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    assert_eq!(run.name_source.to_string(), "spec_slug");
    assert!(!run.run_branch.contains("Blocked"), "{}", run.run_branch);
    let naming = &exec.received()[0];
    assert_eq!(naming.purpose, ExecPurpose::Naming);
    // The naming call obeys the step timeouts (no fixed 120 s).
    assert_eq!(naming.idle_timeout, Some(Duration::from_secs(7)));
    assert_eq!(naming.timeout, None);
    let steps = h.steps(run.id).await;
    let step = steps
        .iter()
        .find(|s| s.phase == StepPhase::Naming)
        .expect("naming step");
    assert_eq!(step.status, StepStatus::Failed);
    assert!(
        step.reason
            .as_deref()
            .unwrap_or_default()
            .contains("not a label of plain words"),
        "{step:?}"
    );
    let events = h.events(run.id).await;
    let named = events
        .iter()
        .find(|e| e.kind == EventKind::RunNamed)
        .expect("RUN_NAMED");
    assert!(
        named.payload.to_string().contains("not a label"),
        "{}",
        named.payload
    );
    let artifacts = h.store.list_artifacts(run.id).await.expect("artifacts");
    assert!(artifacts.iter().any(|a| a.kind == ArtifactKind::NamingLog));
}
