//! The plan agent end to end without the CLI: the test plays the CLI's part, running the
//! `Bash` command the server asks for in a real git repository and sending the output back,
//! then checks the plan, the commits and the final sentences.

use std::time::Duration;

use loop_engine::process::Cmd;
use loop_engine::testing::GitFixture;
use scripted_model::plan_agent::COMPLETION_TOKEN;
use scripted_model::{ModelServer, Script, Turn, When};
use serde_json::{Value, json};

use crate::client::post;

const PLAN: &str = "specs/planning/widget-plan.md";

fn plan_text() -> String {
    "# Widget plan\n\n## Tasks\n- [ ] Task number 1\n  - [ ] Task number 2\n\
     ```\n- [ ] fenced, not a task\n```\n- [ ]? Manual check\n* [ ] Task number 3\n"
        .to_owned()
}

fn repo() -> GitFixture {
    let repo = GitFixture::new();
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file(PLAN, &plan_text());
    repo.commit_all("spec and plan");
    repo
}

fn implementation_prompt() -> String {
    format!(
        "@specs/widget.md @{PLAN} @/tmp/logs/run-1/runner-notes.txt\n\nYou are one iteration of an automated coding loop."
    )
}

fn reviewer_prompt() -> String {
    format!("@specs/widget.md @{PLAN}\n\nYou are a senior reviewer in an automated coding loop.")
}

/// Plays one CLI turn: asks the server, runs the Bash call in `repo`, sends the result back
/// and returns the final text.
async fn cli_turn(server: &ModelServer, repo: &GitFixture, prompt: &str) -> String {
    let first_user = json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nattribution\n</system-reminder>"},
        {"type": "text", "text": prompt}
    ]});
    let res = post(
        server.addr(),
        &json!({"model": "m", "stream": true, "messages": [first_user]}),
    )
    .await;
    let events = res.events();
    let (_, start) = events
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .expect("a content block");
    assert_eq!(start["content_block"]["type"], "tool_use", "{events:?}");
    assert_eq!(start["content_block"]["name"], "Bash");
    let id = start["content_block"]["id"]
        .as_str()
        .expect("tool_use id")
        .to_owned();
    let input: Value = events
        .iter()
        .find(|(n, _)| n == "content_block_delta")
        .and_then(|(_, d)| d["delta"]["partial_json"].as_str())
        .map(|json| serde_json::from_str(json).expect("tool input is JSON"))
        .expect("an input_json_delta");
    let command = input["command"].as_str().expect("a Bash command");
    let mut cmd = Cmd::new("bash", repo.path())
        .arg("-c")
        .arg(command)
        .timeout(Some(Duration::from_secs(30)));
    for (k, v) in repo.env() {
        cmd = cmd.env(k, v);
    }
    let out = cmd.output().await.expect("bash runs");
    let output = format!("{}{}", out.stdout_text(), out.stderr_text());
    let follow_up = json!({"model": "m", "stream": true, "messages": [
        first_user,
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id,
            "content": output.trim_end(), "is_error": !out.success()}]}
    ]});
    let res = post(server.addr(), &follow_up).await;
    res.events()
        .into_iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn plan(repo: &GitFixture) -> String {
    std::fs::read_to_string(repo.path().join(PLAN)).expect("plan file")
}

#[tokio::test]
async fn implements_reviews_and_completes_the_plan() {
    let repo = repo();
    let server = ModelServer::start(Script::plan_agent()).unwrap();

    let first = cli_turn(&server, &repo, &implementation_prompt()).await;
    assert_eq!(first, "Completed Task number 1. 2 tasks remain.");
    let text = plan(&repo);
    assert!(text.contains("- [x] Task number 1\n"), "{text}");
    assert!(text.contains("  - [ ] Task number 2\n"), "{text}");
    assert!(
        text.contains("- [ ] fenced, not a task"),
        "fences are left alone"
    );
    assert_eq!(repo.log_subjects("main")[0], "Task number 1");
    assert!(repo.path().join("scripted-work/task-1.md").exists());
    assert_eq!(
        repo.git(["status", "--porcelain"]).trim(),
        "",
        "all committed"
    );

    let review = cli_turn(&server, &repo, &reviewer_prompt()).await;
    assert_eq!(review, "Review complete. Returning to implementation.");
    assert!(plan(&repo).contains("- [R] Task number 1\n"));
    assert_eq!(repo.log_subjects("main")[0], "Review: accept Task number 1");

    assert_eq!(
        cli_turn(&server, &repo, &implementation_prompt()).await,
        "Completed Task number 2. 1 tasks remain."
    );
    // The last open task: the implementer answers the completion token.
    assert_eq!(
        cli_turn(&server, &repo, &implementation_prompt()).await,
        COMPLETION_TOKEN
    );
    let text = plan(&repo);
    assert!(text.contains("* [x] Task number 3\n"), "{text}");
    assert!(
        text.contains("- [ ]? Manual check"),
        "manual items are never ticked"
    );

    assert_eq!(
        cli_turn(&server, &repo, &reviewer_prompt()).await,
        "Reviewed Task number 2. 1 awaiting review."
    );
    assert_eq!(
        cli_turn(&server, &repo, &reviewer_prompt()).await,
        COMPLETION_TOKEN
    );
    assert!(plan(&repo).contains("* [R] Task number 3\n"));
    // Two model requests per turn: the tool call and the continuation.
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(answers.len(), 12);
    assert_eq!(answers[0], "plan_agent");
    assert_eq!(answers[1], "continuation");
    server.shutdown().await;
}

#[tokio::test]
async fn fixes_a_failing_check_without_ticking() {
    let repo = repo();
    let script = Script::plan_agent().rule(
        When::PromptContains("runner-notes.txt".into()),
        Turn::FixVerification {
            script: "echo ok > fixed.txt".into(),
        },
        Some(1),
    );
    let server = ModelServer::start(script).unwrap();
    let answer = cli_turn(&server, &repo, &implementation_prompt()).await;
    assert_eq!(answer, "Fixed the failing check. 3 tasks remain.");
    assert_eq!(
        std::fs::read_to_string(repo.path().join("fixed.txt")).unwrap(),
        "ok\n"
    );
    assert_eq!(repo.log_subjects("main")[0], "Fix the failing verification");
    assert_eq!(plan(&repo), plan_text(), "nothing ticked");
    server.shutdown().await;
}

#[tokio::test]
async fn a_failing_command_is_reported_not_hidden() {
    // A plan path that does not exist: awk fails, the answer says so.
    let repo = repo();
    let server = ModelServer::start(Script::always(Turn::PlanAgent)).unwrap();
    let answer = cli_turn(&server, &repo, "@specs/missing-plan.md\n\nimplement").await;
    assert!(answer.starts_with("The command failed"), "{answer}");
    assert!(answer.contains("missing-plan.md"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_prompt_without_paths_gets_an_explanation() {
    let server = ModelServer::start(Script::always(Turn::PlanAgent)).unwrap();
    let res = post(
        server.addr(),
        &json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let text = res.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("cannot find the plan"), "{text}");
    server.shutdown().await;
}
