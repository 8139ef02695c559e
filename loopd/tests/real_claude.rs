//! End to end with the real Claude Code CLI under the real loopd: each scenario creates a run
//! through loopd's HTTP API; loopd's engine runs the CLI (through a wrapper script pointing it
//! at a local `scripted-model` server instead of the Anthropic API), and the CLI really runs
//! the model's `Bash` tool calls in the run's worktree. The test follows the run's SSE event
//! stream to its end and checks what a user would look at: the run's status and exit reason,
//! the plan in the worktree, the merge target's git history, `report.tsv`, the steps (with the
//! CLI's usage) and the events.
//!
//! The CLI is found through `CLAUDE_BIN`, else `claude` on `PATH` (`bin/install-claude`
//! installs the pinned version). Without it the test says so and passes, unless
//! `LOOP_REQUIRE_CLAUDE=1`, where it fails.
//!
//! loopd passes its environment to the agent, so the daemon is started with `IS_SANDBOX=1`
//! (the CLI refuses `--dangerously-skip-permissions` as root otherwise); one scenario starts a
//! second daemon with `IS_SANDBOX=yes` to see the refusal reported.

#![expect(
    clippy::print_stderr,
    reason = "the scenarios print their wall times for the test log"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loop_engine::domain::RunStatus;
use loop_engine::plan;
use loop_engine::process::{self, Cmd};
use loop_engine::testing::GitFixture;
use loop_http::Client;
use loop_http::api::{RunResource, StepResource};
use loop_http::client::ApiEvent;
use nix::sys::signal::Signal;
use scripted_model::{ModelServer, Script, Turn, When};

use super::{Daemon, TOKEN, create_request, free_port, signal};

/// The merge target of a `specs/widget.md` run.
const TARGET: &str = "agent/widget";
const PLAN_PATH: &str = "specs/planning/widget-plan.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_under_loopd() {
    let claude = match scripted_model::cli::claude_for_test() {
        scripted_model::cli::ClaudeForTest::Found(bin) => bin,
        scripted_model::cli::ClaudeForTest::Skip(why) => {
            scripted_model::cli::say_skipped("real_claude_under_loopd", &why);
            return;
        }
        scripted_model::cli::ClaudeForTest::Required(why) => panic!("{why}"),
    };
    eprintln!("real_claude: using {}", claude.display());
    let total = Instant::now();
    let data = tempfile::tempdir().expect("data dir");
    let mut daemon = start_daemon(data.path(), "1").await;
    let client = daemon.client.clone();
    timed(
        "a) plan with reviewer",
        plan_with_reviewer(&client, &claude),
    )
    .await;
    timed("b) transient 529s", transient_overload(&client, &claude)).await;
    timed("c) 401", api_key_refused(&client, &claude)).await;
    timed("d) stalled model", stalled_model(&client, &claude)).await;
    timed("e) root with IS_SANDBOX=yes", root_without_sandbox(&claude)).await;
    timed("f) verification fix", verification_fix(&client, &claude)).await;
    stop(&mut daemon, data.path()).await;
    eprintln!("real_claude: all scenarios in {:.1?}", total.elapsed());
}

async fn timed(name: &str, scenario: impl std::future::Future<Output = ()>) {
    let started = Instant::now();
    scenario.await;
    eprintln!("real_claude: {name}: {:.1?}", started.elapsed());
}

/// Starts loopd on a free port with `IS_SANDBOX=is_sandbox` and an isolated git identity (the
/// engine commits the seed and the merge itself). Its stderr goes to `<data>/loopd.stderr`.
async fn start_daemon(data: &Path, is_sandbox: &str) -> Daemon {
    let port = free_port();
    let stderr = std::fs::File::create(data.join("loopd.stderr")).expect("stderr file");
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--stop-grace-sec", "5"])
        .env("LOOPD_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("IS_SANDBOX", is_sandbox)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Loop Test")
        .env("GIT_AUTHOR_EMAIL", "loop-test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Loop Test")
        .env("GIT_COMMITTER_EMAIL", "loop-test@example.invalid")
        .env_remove("CLAUDE_CODE_MAX_RETRIES")
        .to_tokio();
    cmd.stdout(std::process::Stdio::null()).stderr(stderr);
    let child = cmd.spawn().expect("loopd starts");
    let client =
        Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).expect("client");
    client
        .wait_ready(Duration::from_secs(20))
        .await
        .expect("loopd becomes ready");
    Daemon { child, client }
}

/// SIGTERM, then a clean exit; what loopd logged (warnings and errors) goes to the test log.
async fn stop(daemon: &mut Daemon, data: &Path) {
    signal(&daemon.child, Signal::SIGTERM);
    let status = daemon.child.wait().await.expect("loopd exits");
    let log = std::fs::read_to_string(data.join("loopd.stderr")).unwrap_or_default();
    if !log.trim().is_empty() {
        eprintln!("real_claude: loopd logged:\n{log}");
    }
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}

/// A shell script that points the CLI at `server`, isolates it from the user's settings and
/// git configuration, and execs it. `IS_SANDBOX` and `CLAUDE_CODE_MAX_RETRIES` come from
/// loopd (its environment and the `claude_max_retries` key).
fn wrapper(dir: &Path, claude: &Path, server: &ModelServer) -> PathBuf {
    let path = dir.join("claude-wrapper.sh");
    scripted_model::cli::Wrapper {
        claude: claude.to_path_buf(),
        base_url: server.base_url(),
        home: Some(dir.join("claude-home")),
        isolated_git: true,
        exports: vec![(
            "CLAUDE_CODE_MAX_RETRIES".into(),
            "${CLAUDE_CODE_MAX_RETRIES:-0}".into(),
        )],
    }
    .write(&path)
    .expect("wrapper script written");
    path
}

/// The plan of the engine's end-to-end tests: `n` tasks, a fenced pseudo-task and a manual QA
/// item, neither of which may be worked.
fn plan_text(n: usize) -> String {
    let mut s = String::from("# Widget plan\n\n## Tasks\n");
    for i in 1..=n {
        s.push_str(&format!("- [ ] Task number {i}\n"));
    }
    s.push_str("\n```\n- [ ] not a task (fenced)\n```\n- [ ]? Manual check\n");
    s
}

/// A repository with the widget spec, a 3-task plan and a `.loop/config` running the real CLI
/// (through a wrapper pointed at `server`), plus `extra` keys (which replace defaults).
fn repo_for(claude: &Path, server: &ModelServer, extra: &[(&str, &str)]) -> GitFixture {
    let repo = GitFixture::new();
    let wrapper = wrapper(repo.root(), claude, server);
    let global = repo.root().join("global-logs");
    let mut keys: Vec<(String, String)> = [
        ("executor", "claude".to_owned()),
        ("claude_bin", wrapper.display().to_string()),
        ("run_naming_mode", "spec_slug".to_owned()),
        ("global_log_dir", global.display().to_string()),
        ("reviewer", "false".to_owned()),
        ("postmortem", "false".to_owned()),
        ("model", "opus".to_owned()),
        ("claude_max_retries", "0".to_owned()),
        ("claude_timeout_sec", "60".to_owned()),
        ("claude_retry_backoff_sec", "0".to_owned()),
        ("claude_transient_retries", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = (*v).to_owned(),
            None => keys.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    let config: String = keys.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    repo.write_file(".loop/config", &config);
    repo.write_file("specs/widget.md", "# Widget\n\nBuild the widget.\n");
    repo.write_file(PLAN_PATH, &plan_text(3));
    repo.write_file(".gitignore", "logs/\n");
    repo.commit_all("spec and plan");
    repo
}

/// One `report.tsv` row: kind, iteration, exit code, message.
#[derive(Debug)]
struct ReportRow {
    kind: String,
    iteration: String,
    exit_code: String,
    message: String,
}

/// Everything a finished run left behind, as loopd reports it.
struct Finished {
    run: RunResource,
    events: Vec<ApiEvent>,
    steps: Vec<StepResource>,
    rows: Vec<ReportRow>,
}

impl Finished {
    fn kinds(&self) -> BTreeSet<&str> {
        self.events.iter().map(|e| e.kind.as_str()).collect()
    }

    fn events_of(&self, kind: &str) -> Vec<&ApiEvent> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    fn rows_of(&self, kind: &str) -> Vec<&ReportRow> {
        self.rows.iter().filter(|r| r.kind == kind).collect()
    }

    fn steps_in(&self, phase: &str) -> Vec<&StepResource> {
        self.steps.iter().filter(|s| s.phase == phase).collect()
    }

    fn worktree_plan(&self) -> String {
        std::fs::read_to_string(self.run.worktree_path.join(PLAN_PATH)).expect("plan in worktree")
    }

    /// The run's folder in its workspace.
    fn folder(&self) -> PathBuf {
        self.run
            .workspace_root
            .join("logs/loop")
            .join(format!("run-{}", self.run.id))
    }

    /// The end event is the last one, its payload names the exit reason.
    fn assert_ends_with(&self, kind: &str) {
        let last = self.events.last().expect("events");
        assert_eq!(last.kind, kind, "{:?}", self.event_kinds());
        let reason = self.run.exit_reason.as_deref().expect("an exit reason");
        let field = if kind == "RUN_COMPLETED" {
            "mode"
        } else {
            "exit_reason"
        };
        assert_eq!(last.data["payload"][field], reason, "{last:?}");
        let end = self.rows.last().expect("report rows");
        assert_eq!(end.kind, "RUN_END", "{end:?}");
        assert_eq!(end.message, format!("reason={reason}"), "{end:?}");
    }

    fn event_kinds(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.kind.as_str()).collect()
    }

    /// The implementation steps that succeeded carry what the CLI's `result` line said: one
    /// tool call and one final answer, tokens and a cost.
    fn assert_usage_recorded(&self) {
        let ok: Vec<_> = self
            .steps_in("implementation")
            .into_iter()
            .filter(|s| s.status == "SUCCEEDED")
            .collect();
        assert!(!ok.is_empty(), "{:#?}", self.steps);
        for step in ok {
            let usage = step.usage.as_ref().expect("usage from the result line");
            assert_eq!(usage.turns, Some(2), "{usage:?}");
            assert!(usage.input_tokens.unwrap_or(0) > 0, "{usage:?}");
            assert!(usage.output_tokens.unwrap_or(0) > 0, "{usage:?}");
            assert!(usage.cost_usd.unwrap_or(0.0) > 0.0, "{usage:?}");
            assert!(!usage.is_error, "{usage:?}");
        }
    }
}

/// Creates the run through loopd, follows its SSE stream to the end (reconnecting after the
/// last event seen if the stream drops early) and collects the result.
async fn run_to_end(client: &Client, repo: &GitFixture) -> Finished {
    let id = client
        .create_run(&create_request(repo))
        .await
        .expect("loopd accepts the run")
        .run
        .id;
    let mut events: Vec<ApiEvent> = Vec::new();
    let follow = async {
        loop {
            let mut stream = client
                .events(id, events.last().map(|e| e.seq))
                .await
                .expect("event stream");
            while let Some(ev) = stream.next().await.expect("event") {
                events.push(ev);
            }
            if client.get_run(id).await.expect("run").status.is_terminal() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), follow)
        .await
        .expect("the run ends within 120 s");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1, "events are gap-free");
        assert_eq!(ev.data["run_id"], id.to_string(), "{ev:?}");
    }
    let run = client.get_run(id).await.expect("run");
    let steps = client.steps(id).await.expect("steps");
    let report = run
        .workspace_root
        .join("logs/loop")
        .join(format!("run-{id}"))
        .join("report.tsv");
    let text = std::fs::read_to_string(&report).expect("report.tsv");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("timestamp_ms\tkind"),
        "report.tsv starts with its header"
    );
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let get = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            ReportRow {
                kind: get(1),
                iteration: get(2),
                exit_code: get(4),
                message: get(8),
            }
        })
        .collect();
    Finished {
        run,
        events,
        steps,
        rows,
    }
}

async fn plan_with_reviewer(client: &Client, claude: &Path) {
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    let repo = repo_for(claude, &server, &[("reviewer", "true")]);
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert!(
        matches!(
            f.run.exit_reason.as_deref(),
            Some("complete_reviewer" | "complete_plan")
        ),
        "{:?}",
        f.run.exit_reason
    );
    f.assert_ends_with("RUN_COMPLETED");
    assert_eq!((f.run.tasks_done, f.run.tasks_total), (3, 3));
    let counts = plan::counts(&f.worktree_plan());
    assert_eq!(
        (counts.pending, counts.to_review, counts.done),
        (0, 0, 3),
        "every task implemented and reviewed"
    );
    // The merge target holds the work, squashed into one commit on top of the base.
    assert_eq!(f.run.merge_target_branch.as_deref(), Some(TARGET));
    let log = repo.log_subjects(TARGET);
    assert_eq!(
        log.first().map(String::as_str),
        Some("loop: widget (3 of 3 tasks)"),
        "{log:?}"
    );
    assert!(log.iter().any(|s| s == "spec and plan"), "{log:?}");
    assert!(
        !log.iter().any(|s| s.starts_with("Task number")),
        "squashed: {log:?}"
    );
    for n in 1..=3 {
        let file = format!("scripted-work/task-{n}.md");
        assert!(repo.file_at(TARGET, &file).is_some(), "{file} on {TARGET}");
    }
    let merged_plan = repo.file_at(TARGET, PLAN_PATH).expect("plan on the target");
    assert!(merged_plan.contains("- [R] Task number 3"), "{merged_plan}");
    assert!(merged_plan.contains("- [ ]? Manual check"), "{merged_plan}");
    // The run branch has one commit per task and one per review.
    let run_log = repo.log_subjects(&f.run.run_branch);
    for subject in ["Task number 1", "Review: accept Task number 3"] {
        assert!(run_log.iter().any(|s| s == subject), "{run_log:?}");
    }
    assert_eq!(f.steps_in("implementation").len(), 3, "{:#?}", f.steps);
    assert_eq!(f.steps_in("review").len(), 3, "{:#?}", f.steps);
    for kind in ["RUN_START", "ITERATION_START", "ITERATION_END", "RUN_END"] {
        assert!(!f.rows_of(kind).is_empty(), "{kind} in {:?}", f.rows);
    }
    let kinds = f.kinds();
    for k in [
        "RUN_STARTED",
        "WORKTREE_READY",
        "STEP_STARTED",
        "STEP_FINISHED",
        "COMPLETE_DETECTED",
        "MERGE_DONE",
    ] {
        assert!(kinds.contains(k), "missing {k}: {kinds:?}");
    }
    let merge = f.events_of("MERGE_DONE");
    assert_eq!(merge.len(), 1);
    assert_eq!(merge[0].data["payload"]["target"], TARGET, "{merge:?}");
    assert_eq!(merge[0].data["payload"]["outcome"], "merged", "{merge:?}");
    let head = repo.git(["rev-parse", TARGET]);
    assert_eq!(
        merge[0].data["payload"]["commit"].as_str(),
        Some(head.trim()),
        "MERGE_DONE names the target's head"
    );
    f.assert_usage_recorded();
    // Every model request came from the CLI, streamed, with the test key.
    let requests = server.messages_requests();
    assert_eq!(requests.len(), 12, "two requests per step");
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some("test"));
        assert!(r.messages().expect("JSON body").stream());
    }
    server.shutdown().await;
}

async fn transient_overload(client: &Client, claude: &Path) {
    let overloaded = || Turn::Error {
        status: 529,
        body: None,
        retry_after: None,
    };
    let server = ModelServer::start(Script::plan_agent().then(overloaded()).then(overloaded()))
        .expect("model server starts");
    // The CLI retries once by itself (an api_retry line), then gives up; the engine retries.
    let repo = repo_for(
        claude,
        &server,
        &[
            ("claude_max_retries", "1"),
            ("claude_transient_retries", "3"),
            ("claude_transient_backoff_max_sec", "1"),
        ],
    );
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert_eq!(f.run.exit_reason.as_deref(), Some("complete_plan"));
    f.assert_ends_with("RUN_COMPLETED");
    assert_eq!(server.turns_left(), 0, "both 529s were served");
    let api_retry = f.events_of("CLAUDE_API_RETRY");
    let first = api_retry
        .first()
        .expect("the CLI's api_retry line became an event");
    let p = &first.data["payload"];
    assert_eq!(p["error_status"], 529, "{first:?}");
    assert_eq!(p["attempt"], 1, "{first:?}");
    assert_eq!(p["max_retries"], 1, "{first:?}");
    assert!(p["delay_ms"].as_u64().unwrap_or(0) > 0, "{first:?}");
    let retries = f.events_of("CLAUDE_RETRY");
    assert_eq!(retries.len(), 1, "{:?}", f.event_kinds());
    let message = retries[0].data["payload"]["message"].as_str().unwrap_or("");
    // The seed's words in report.tsv; why and how the step is retried in run.log.
    assert_eq!(message, "attempt=1");
    let run_log = std::fs::read_to_string(f.folder().join("run.log")).expect("run.log");
    assert!(
        run_log
            .lines()
            .any(|l| l.contains("step 1: transient retry after") && l.contains("529")),
        "{run_log}"
    );
    let rows = f.rows_of("CLAUDE_RETRY");
    assert_eq!(rows.len(), 1, "{:?}", f.rows);
    assert_eq!(rows[0].message, message, "report.tsv and SSE agree");
    assert_eq!(rows[0].exit_code, "1", "the CLI exits 1 on an API error");
    let first_step = f.steps_in("implementation")[0];
    assert_eq!(first_step.status, "RETRYING");
    assert_eq!(first_step.exit_code, Some(1));
    assert!(
        first_step.usage.as_ref().is_some_and(|u| u.is_error),
        "{first_step:?}"
    );
    f.assert_usage_recorded();
    assert_eq!(
        repo.log_subjects(TARGET).first().map(String::as_str),
        Some("loop: widget (3 of 3 tasks)")
    );
    server.shutdown().await;
}

async fn api_key_refused(client: &Client, claude: &Path) {
    let server = ModelServer::start(Script::always(Turn::Error {
        status: 401,
        body: None,
        retry_after: None,
    }))
    .expect("model server starts");
    let repo = repo_for(
        claude,
        &server,
        &[("claude_retries", "2"), ("claude_transient_retries", "3")],
    );
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Failed);
    assert_eq!(f.run.exit_reason.as_deref(), Some("claude_failed"));
    f.assert_ends_with("RUN_FAILED");
    let reason = f.run.failure.clone().unwrap_or_default();
    eprintln!("real_claude: c) failure reason: {reason}");
    assert!(reason.contains("API key was refused"), "{reason}");
    assert!(reason.contains("401"), "{reason}");
    let failed = f.events_of("RUN_FAILED");
    let sse_reason = failed[0].data["payload"]["reason"].as_str().unwrap_or("");
    assert!(sse_reason.contains("API key was refused"), "{sse_reason}");
    // A refused key is not retried, neither by the CLI nor by the engine.
    assert_eq!(server.messages_requests().len(), 1);
    assert!(f.rows_of("CLAUDE_RETRY").is_empty(), "{:?}", f.rows);
    assert!(!f.kinds().contains("CLAUDE_RETRY"));
    let steps = f.steps_in("implementation");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].status, "FAILED");
    assert_eq!(steps[0].exit_code, Some(1));
    assert!(steps[0].usage.as_ref().is_some_and(|u| u.is_error));
    // Nothing was merged: the target branch does not exist.
    let branches = repo.git(["branch", "--list", TARGET]);
    assert!(branches.trim().is_empty(), "{branches}");
    assert_eq!(plan::counts(&f.worktree_plan()).pending, 3);
    server.shutdown().await;
}

async fn stalled_model(client: &Client, claude: &Path) {
    let server =
        ModelServer::start(Script::plan_agent().then(Turn::Stall)).expect("model server starts");
    let repo = repo_for(
        claude,
        &server,
        &[("claude_timeout_sec", "5"), ("claude_retries", "1")],
    );
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert_eq!(f.run.exit_reason.as_deref(), Some("complete_plan"));
    f.assert_ends_with("RUN_COMPLETED");
    let first = f.steps_in("implementation")[0];
    assert_eq!(first.exit_code, Some(124), "{first:?}");
    assert_eq!(first.status, "RETRYING");
    assert_eq!(first.label, "1A1");
    assert!(first.duration_ms.unwrap_or(0) >= 5000, "{first:?}");
    assert!(
        f.steps
            .iter()
            .any(|s| s.label == "1A2" && s.status == "SUCCEEDED"),
        "{:#?}",
        f.steps
    );
    let timeout = f.rows_of("ITERATION_TIMEOUT");
    assert_eq!(timeout.len(), 1, "{:?}", f.rows);
    assert_eq!(timeout[0].exit_code, "124", "{timeout:?}");
    assert_eq!(timeout[0].iteration, "1A1", "{timeout:?}");
    let ev = f.events_of("ITERATION_TIMEOUT");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["payload"]["exit_code"], 124, "{ev:?}");
    assert_eq!(ev[0].data["step_id"], first.id.to_string(), "{ev:?}");
    assert!(f.kinds().contains("CLAUDE_RETRY"));
    assert!(!f.rows_of("CLAUDE_RETRY").is_empty(), "{:?}", f.rows);
    assert_eq!(
        plan::counts(&f.worktree_plan()).pending,
        0,
        "the retry did the work"
    );
    assert!(repo.file_at(TARGET, "scripted-work/task-3.md").is_some());
    f.assert_usage_recorded();
    server.shutdown().await;
}

async fn root_without_sandbox(claude: &Path) {
    if process::effective_uid() != Some(0) {
        scripted_model::cli::say_skipped(
            "real_claude_under_loopd e)",
            "not running as root, so the CLI has no root refusal to show",
        );
        return;
    }
    let data = tempfile::tempdir().expect("data dir");
    let mut daemon = start_daemon(data.path(), "yes").await;
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    let repo = repo_for(claude, &server, &[("claude_retries", "1")]);
    // The daemon knows at creation that the CLI would refuse to start: the run is refused
    // with a 400 that says what to set, before anything is queued or any agent runs.
    let err = daemon
        .client
        .create_run(&create_request(&repo))
        .await
        .map(|c| c.run.id)
        .expect_err("a Claude run as root without IS_SANDBOX=1 is refused");
    let reason = match &err {
        loop_http::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 400, "{message}");
            message.clone()
        }
        other => panic!("expected an API error, got {other:?}"),
    };
    eprintln!("real_claude: e) refusal: {reason}");
    for needle in ["root", "IS_SANDBOX is `yes`", "export IS_SANDBOX=1"] {
        assert!(reason.contains(needle), "{needle} in {reason}");
    }
    assert!(
        daemon
            .client
            .list_runs(&loop_http::api::ListQuery::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing was queued"
    );
    assert!(
        server.requests().is_empty(),
        "the CLI never talked to the model"
    );
    stop(&mut daemon, data.path()).await;
    server.shutdown().await;
}

async fn verification_fix(client: &Client, claude: &Path) {
    // When the CLI attaches runner notes that report a failed check, fix it.
    let script = Script::plan_agent().rule(
        When::RequestContains("verification failed".into()),
        Turn::FixVerification {
            script: "echo fixed > fixed.txt".into(),
        },
        None,
    );
    let server = ModelServer::start(script).expect("model server starts");
    let repo = repo_for(claude, &server, &[("verify_cmds", "test -f fixed.txt")]);
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert_eq!(f.run.exit_reason.as_deref(), Some("complete_plan"));
    f.assert_ends_with("RUN_COMPLETED");
    let answers: Vec<String> = server.requests().into_iter().map(|r| r.answer).collect();
    assert_eq!(
        answers.iter().filter(|a| *a == "fix_verification").count(),
        1,
        "{answers:?}"
    );
    let fix = server
        .messages_requests()
        .into_iter()
        .find(|r| r.answer == "fix_verification")
        .expect("the fix request")
        .messages()
        .expect("JSON body");
    assert!(
        fix.at_paths()
            .iter()
            .any(|p| p.ends_with("runner-notes.txt")),
        "{:?}",
        fix.at_paths()
    );
    let verify: Vec<&str> = f
        .steps_in("verification")
        .iter()
        .map(|s| s.status.as_str())
        .collect();
    assert_eq!(verify.first(), Some(&"FAILED"), "{verify:?}");
    assert_eq!(verify.last(), Some(&"SUCCEEDED"), "{verify:?}");
    let ends: Vec<&str> = f
        .events_of("VERIFY_END")
        .iter()
        .map(|e| e.data["payload"]["message"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ends.first(), Some(&"status=failed"), "{ends:?}");
    assert_eq!(ends.last(), Some(&"status=ok"), "{ends:?}");
    assert_eq!(f.rows_of("VERIFY_END").len(), ends.len(), "{:?}", f.rows);
    assert_eq!(
        repo.file_at(TARGET, "fixed.txt").as_deref(),
        Some("fixed\n")
    );
    let run_log = repo.log_subjects(&f.run.run_branch);
    assert!(
        run_log.iter().any(|s| s == "Fix the failing verification"),
        "{run_log:?}"
    );
    let notes = std::fs::read_to_string(f.folder().join("runner-notes.txt")).unwrap_or_default();
    assert!(notes.trim().is_empty(), "notes cleared: {notes}");
    assert_eq!(plan::counts(&f.worktree_plan()).pending, 0);
    f.assert_usage_recorded();
    server.shutdown().await;
}
