//! The run's files say what happened (issue 19 items 9 and 2): why a run failed in run.log and
//! summary.json, the merge as MERGE_START/MERGE_END rows, summary.json's added keys (status,
//! name, tasks, branches, cost, tokens, the model the agent reported), and a step that ticked a
//! task without committing flagged at that step.

use std::path::PathBuf;
use std::sync::Arc;

use loop_engine::backend::{AgentResult, ExecOutcome, ExecPurpose, ExecRequest};
use loop_engine::domain::{AgentUsage, EventKind, Run, RunStatus};
use loop_engine::impls::SimulatedAgent;
use loop_engine::testing::{Act, ScriptedExecutor};

use crate::support::{Harness, Setup};

fn folder(run: &Run) -> PathBuf {
    run.workspace_root
        .join("logs/loop")
        .join(format!("run-{}", run.id))
}

fn run_log(run: &Run) -> String {
    std::fs::read_to_string(folder(run).join("run.log")).expect("run.log")
}

fn summary(run: &Run) -> serde_json::Value {
    let text = std::fs::read_to_string(folder(run).join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The report.tsv rows of `kind`, as their fields.
fn rows(run: &Run, kind: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(folder(run).join("report.tsv")).expect("report.tsv");
    text.lines()
        .skip(1)
        .map(|l| l.split('\t').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.get(1).map(String::as_str) == Some(kind))
        .collect()
}

fn setup(tasks: usize, config: Vec<(&'static str, String)>) -> Setup {
    Setup {
        tasks,
        config,
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_says_why_in_run_log_and_summary() {
    let exec = ScriptedExecutor::new(vec![(
        ExecPurpose::Implementation,
        Act::Fail {
            code: 3,
            stderr: "the agent broke down".into(),
        },
    )]);
    let h = Harness::new(setup(2, vec![]), exec);
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Failed);
    let failure = run.failure.clone().expect("a failure text");
    let log = run_log(&run);
    let line = log
        .lines()
        .find(|l| l.contains("RUN_FAILED"))
        .unwrap_or_else(|| panic!("no RUN_FAILED line in run.log:\n{log}"));
    assert!(line.contains("reason=claude_failed"), "{line}");
    assert!(
        line.contains("agent failed (exit 3): the agent broke down"),
        "{line}"
    );
    // run.log keeps a line one line long: the failure's newlines are spaces there.
    assert!(
        line.contains(&failure.replace(['\r', '\n'], " ")),
        "{line} / {failure}"
    );
    // The RUN_END row keeps the seed's whole message.
    let end = rows(&run, "RUN_END");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0][8], "reason=claude_failed");
    let s = summary(&run);
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["exit_reason"], "claude_failed");
    assert_eq!(s["failure"], failure.as_str());
    assert_eq!(s["name"], run.name.as_str());
    assert_eq!(s["run_branch"], run.run_branch.as_str());
    assert_eq!(s["base_branch"], run.base_branch.as_str());
    assert_eq!(s["tasks_done"], 0);
    assert_eq!(s["tasks_total"], 2);
    assert!(s["cost_usd"].is_null(), "{s}");
    // No merge was tried.
    assert!(rows(&run, "MERGE_START").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merge_is_in_run_log_report_and_summary() {
    let h = Harness::new(setup(2, vec![]), SimulatedAgent::new());
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let target = run.merge_target_branch.clone().expect("a target");
    let start = rows(&run, "MERGE_START");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0][2], "merge");
    assert!(
        start[0][8].starts_with(&format!("target={target} strategy=squash ")),
        "{:?}",
        start[0]
    );
    let end = rows(&run, "MERGE_END");
    assert_eq!(end.len(), 1, "{end:?}");
    assert!(
        end[0][8].starts_with(&format!(
            "target={target} strategy=squash status=ok outcome=merged commit="
        )),
        "{:?}",
        end[0]
    );
    assert_eq!(end[0][4], "0", "exit code");
    assert!(!end[0][3].is_empty(), "duration");
    let log = run_log(&run);
    let start_at = log
        .find("MERGE_START iter=merge target=")
        .expect("run.log MERGE_START");
    let end_at = log
        .find("MERGE_END iter=merge target=")
        .expect("run.log MERGE_END");
    let run_end = log.find("RUN_END").expect("run.log RUN_END");
    assert!(start_at < end_at && end_at < run_end, "{log}");
    assert!(!log.contains("RUN_FAILED"), "{log}");
    let s = summary(&run);
    assert_eq!(s["status"], "COMPLETED");
    assert_eq!(s["target_branch"], target.as_str());
    assert_eq!(s["tasks_done"], run.tasks_total);
    assert_eq!(s["tasks_total"], run.tasks_total);
    assert!(
        s["failure"].is_null() && s["merge_pending"].is_null(),
        "{s}"
    );
    // The simulated agent reports no model: the configured one.
    assert_eq!(s["model"], "opus");
    // Every agent step committed: no tick went without a commit.
    assert!(
        !h.kinds(run.id)
            .await
            .contains(&EventKind::WarnTickWithoutCommit)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_merge_is_a_pending_row_and_in_the_summary() {
    let h = Harness::new(
        setup(2, vec![("merge_target_branch", "main".into())]),
        SimulatedAgent::new(),
    );
    h.repo
        .write_file("specs/widget.md", "# Widget\n\nmy unsaved edit\n");
    let run = h.run_one().await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.failure);
    let end = rows(&run, "MERGE_END");
    assert_eq!(end.len(), 1, "{end:?}");
    assert!(
        end[0][8].starts_with("target=main strategy=squash status=pending reason="),
        "{:?}",
        end[0]
    );
    let s = summary(&run);
    assert_eq!(s["status"], "COMPLETED");
    let pending = s["merge_pending"].as_str().expect("merge_pending");
    assert!(pending.contains("uncommitted changes"), "{pending}");
    assert!(run_log(&run).contains("status=pending"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_without_a_commit_is_flagged_at_its_step_and_the_reported_model_wins() {
    let setup = setup(1, vec![("merge_strategy", "none".into())]);
    // The agent ticks the task, commits nothing, and reports its model, cost and tokens.
    let tick = Act::Custom(Arc::new(|req: &ExecRequest| {
        let plan = req.workdir.join("specs/planning/widget-plan.md");
        let text = std::fs::read_to_string(&plan).expect("plan in the worktree");
        let ticked = text.replacen("- [ ] Task number 1", "- [x] Task number 1", 1);
        std::fs::write(&plan, ticked).expect("plan written");
        std::fs::write(&req.log_path, "ticked\n").expect("log written");
        let text = "Task 1 done.\n<promise>COMPLETE</promise>".to_owned();
        ExecOutcome {
            exit_code: 0,
            output_text: text.clone(),
            result: Some(AgentResult {
                subtype: Some("success".into()),
                text,
                usage: AgentUsage {
                    input_tokens: Some(120),
                    output_tokens: Some(45),
                    cost_usd: Some(0.5),
                    model: Some("claude-test-model".into()),
                    ..AgentUsage::default()
                },
                ..AgentResult::default()
            }),
            ..ExecOutcome::default()
        }
    }));
    let exec = ScriptedExecutor::new(vec![(ExecPurpose::Implementation, tick)]);
    let h = Harness::new(setup, exec.clone());
    let run = h.run_one().await;
    assert!(exec.unexpected().is_empty(), "{:?}", exec.unexpected());
    let events = h.events(run.id).await;
    let warn = events
        .iter()
        .find(|e| e.kind == EventKind::WarnTickWithoutCommit)
        .unwrap_or_else(|| panic!("no WARN_TICK_WITHOUT_COMMIT: {:?}", run.failure));
    let steps = h.steps(run.id).await;
    let agent_step = steps
        .iter()
        .find(|s| s.label == "1")
        .expect("the agent step");
    assert_eq!(warn.step_id, Some(agent_step.id), "flagged at its step");
    let row = rows(&run, "WARN_TICK_WITHOUT_COMMIT");
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(row[0][2], "1");
    assert_eq!(row[0][8], "tasks=1");
    assert!(
        run_log(&run).contains("WARN_TICK_WITHOUT_COMMIT iter=1 tasks=1"),
        "{}",
        run_log(&run)
    );
    let s = summary(&run);
    assert_eq!(s["model"], "claude-test-model");
    assert_eq!(s["cost_usd"], 0.5);
    assert_eq!(s["input_tokens"], 120);
    assert_eq!(s["output_tokens"], 45);
}
