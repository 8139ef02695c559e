//! End to end with the real Codex CLI and the real Gemini CLI under the real loopd, like
//! `real_claude.rs` does for Claude: each scenario creates a run through loopd's HTTP API with
//! `executor=codex` or `executor=gemini`; loopd's engine runs the CLI, pointed at a local
//! `scripted-model` server (the Responses API for Codex, `streamGenerateContent` for Gemini)
//! through `agent_env`, and the CLI really runs the model's shell tool calls in the run's
//! worktree. The scenarios: a 3-task plan with the reviewer to COMPLETED and merged; a refused
//! key that fails fast naming the key; a transient server error retried to completion; a
//! stalled model cut by the idle timeout.
//!
//! The CLIs are found through `CODEX_BIN` / `GEMINI_BIN`, else the pinned copy
//! `bin/install-codex` / `bin/install-gemini` put in `~/.cache/agent-loop/`. Without one the
//! test says so and passes, unless `LOOP_REQUIRE_CODEX=1` / `LOOP_REQUIRE_GEMINI=1`.
//!
//! Each CLI keeps its state in a private folder of the test (`CODEX_HOME`, `GEMINI_CLI_HOME`,
//! `TMPDIR`), never in `HOME`.

#![expect(
    clippy::print_stderr,
    reason = "the scenarios print their wall times for the test log"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loop_engine::domain::RunStatus;
use loop_engine::plan;
use loop_engine::process::Cmd;
use loop_engine::testing::GitFixture;
use loop_http::Client;
use loop_http::api::{RunResource, StepResource};
use loop_http::client::ApiEvent;
use nix::sys::signal::Signal;
use scripted_model::{ModelServer, Script, Turn};

use super::{Daemon, TOKEN, create_request, free_port, signal};

const TARGET: &str = "agent/widget";
const PLAN_PATH: &str = "specs/planning/widget-plan.md";

/// The agent CLI under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agent {
    Codex,
    Gemini,
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Self::Codex => "codex",
            Self::Gemini => "gemini",
        }
    }

    /// `CODEX_BIN` / `GEMINI_BIN`, else the installed pinned copy.
    fn find(self) -> Option<PathBuf> {
        let (var, folder, version) = match self {
            Self::Codex => (
                "CODEX_BIN",
                "codex-",
                include_str!("../../.ci/codex-version"),
            ),
            Self::Gemini => (
                "GEMINI_BIN",
                "gemini-cli-",
                include_str!("../../.ci/gemini-version"),
            ),
        };
        if let Some(bin) = std::env::var_os(var).filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            return bin.is_file().then_some(bin);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        let bin = cache
            .join("agent-loop")
            .join(format!("{folder}{}", version.trim()))
            .join("node_modules/.bin")
            .join(self.name());
        bin.is_file().then_some(bin)
    }

    /// The CLI, or `None` after saying why the test skips (a panic when it is required).
    fn for_test(self, test: &str) -> Option<PathBuf> {
        if let Some(bin) = self.find() {
            return Some(bin);
        }
        let (var, require, script) = match self {
            Self::Codex => ("CODEX_BIN", "LOOP_REQUIRE_CODEX", "bin/install-codex"),
            Self::Gemini => ("GEMINI_BIN", "LOOP_REQUIRE_GEMINI", "bin/install-gemini"),
        };
        let why = format!(
            "the {} CLI was not found (set {var}, or run {script} to install the pinned version)",
            self.name()
        );
        assert!(
            std::env::var(require).as_deref() != Ok("1"),
            "{require}=1 but {why}"
        );
        scripted_model::cli::say_skipped(test, &why);
        None
    }

    /// The config keys and environment that run this CLI against `server` only, with its
    /// state in `state` (created here).
    fn keys(self, bin: &Path, server: &ModelServer, state: &Path) -> Vec<(String, String)> {
        let tmp = state.join("tmp");
        std::fs::create_dir_all(&tmp).expect("private TMPDIR");
        let (bin_key, env) = match self {
            Self::Codex => {
                let home = state.join("codex-home");
                std::fs::create_dir_all(&home).expect("CODEX_HOME");
                (
                    "codex_bin",
                    format!(
                        "OPENAI_API_KEY=test OPENAI_BASE_URL={}/v1 CODEX_HOME={} TMPDIR={}",
                        server.base_url(),
                        home.display(),
                        tmp.display()
                    ),
                )
            }
            Self::Gemini => {
                let home = state.join("gemini-home");
                let settings = home.join(".gemini");
                std::fs::create_dir_all(&settings).expect("GEMINI_CLI_HOME");
                // An auth method must be selected; the rest keeps the CLI offline and quiet.
                // One attempt per call, so a server error reaches the engine at once.
                std::fs::write(
                    settings.join("settings.json"),
                    r#"{"security":{"auth":{"selectedType":"gemini-api-key"}},
"privacy":{"usageStatisticsEnabled":false},"telemetry":{"enabled":false},
"general":{"disableAutoUpdate":true,"disableUpdateNag":true,"maxAttempts":1}}"#,
                )
                .expect("settings.json");
                (
                    "gemini_bin",
                    format!(
                        "GEMINI_API_KEY=test GOOGLE_GEMINI_BASE_URL={} GEMINI_CLI_HOME={} TMPDIR={}",
                        server.base_url(),
                        home.display(),
                        tmp.display()
                    ),
                )
            }
        };
        let model = match self {
            Self::Codex => ("codex_model", "gpt-5"),
            Self::Gemini => ("gemini_model", "gemini-2.5-pro"),
        };
        vec![
            ("executor".into(), self.name().into()),
            (bin_key.into(), bin.display().to_string()),
            (model.0.into(), model.1.into()),
            ("agent_env".into(), env),
        ]
    }

    /// The credential header the CLI sends with the test key.
    fn key_header(self) -> (&'static str, &'static str) {
        match self {
            Self::Codex => ("authorization", "Bearer test"),
            Self::Gemini => ("x-goog-api-key", "test"),
        }
    }

    /// The idle timeout of the stall scenario, in seconds: above the CLI's start-up time,
    /// during which it prints nothing (the Gemini CLI takes 10-30 s on a loaded machine).
    fn idle_timeout_sec(self) -> u64 {
        match self {
            Self::Codex => 8,
            Self::Gemini => 60,
        }
    }

    /// The variable an auth failure names.
    fn key_var(self) -> &'static str {
        match self {
            Self::Codex => "OPENAI_API_KEY",
            Self::Gemini => "GEMINI_API_KEY",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_codex_under_loopd() {
    scenarios(Agent::Codex, "real_codex_under_loopd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gemini_under_loopd() {
    scenarios(Agent::Gemini, "real_gemini_under_loopd").await;
}

async fn scenarios(agent: Agent, test: &str) {
    let Some(bin) = agent.for_test(test) else {
        return;
    };
    let name = agent.name();
    eprintln!("real_{name}: using {}", bin.display());
    let total = Instant::now();
    let data = tempfile::tempdir().expect("data dir");
    let mut daemon = start_daemon(data.path()).await;
    let client = daemon.client.clone();
    let t = Instant::now();
    plan_with_reviewer(&client, agent, &bin).await;
    eprintln!("real_{name}: a) plan with reviewer: {:.1?}", t.elapsed());
    let t = Instant::now();
    api_key_refused(&client, agent, &bin).await;
    eprintln!("real_{name}: b) 401: {:.1?}", t.elapsed());
    let t = Instant::now();
    transient_error(&client, agent, &bin).await;
    eprintln!("real_{name}: c) transient 503: {:.1?}", t.elapsed());
    let t = Instant::now();
    stalled_model(&client, agent, &bin).await;
    eprintln!("real_{name}: d) stalled model: {:.1?}", t.elapsed());
    stop(&mut daemon, data.path()).await;
    eprintln!("real_{name}: all scenarios in {:.1?}", total.elapsed());
}

/// loopd on a free port with an isolated git identity. Its stderr goes to
/// `<data>/loopd.stderr`.
async fn start_daemon(data: &Path) -> Daemon {
    let port = free_port();
    let stderr = std::fs::File::create(data.join("loopd.stderr")).expect("stderr file");
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_loopd"), data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .args(["--stop-grace-sec", "5"])
        .env("LOOPD_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Loop Test")
        .env("GIT_AUTHOR_EMAIL", "loop-test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Loop Test")
        .env("GIT_COMMITTER_EMAIL", "loop-test@example.invalid")
        // Whatever keys the machine has must not reach the CLIs under test.
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("CODEX_HOME")
        .env_remove("GEMINI_API_KEY")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GOOGLE_GEMINI_BASE_URL")
        .env_remove("GEMINI_CLI_HOME")
        .to_tokio();
    cmd.stdout(std::process::Stdio::null()).stderr(stderr);
    let child = cmd.spawn().expect("loopd starts");
    let client =
        Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).expect("client");
    client
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("loopd becomes ready");
    Daemon { child, client }
}

async fn stop(daemon: &mut Daemon, data: &Path) {
    signal(&daemon.child, Signal::SIGTERM);
    let status = daemon.child.wait().await.expect("loopd exits");
    let log = std::fs::read_to_string(data.join("loopd.stderr")).unwrap_or_default();
    if !log.trim().is_empty() {
        eprintln!("real_agents: loopd logged:\n{log}");
    }
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
}

/// A repository with the widget spec, a 3-task plan and a `.loop/config` running `agent`
/// against `server`, plus `extra` keys (which replace defaults).
fn repo_for(agent: Agent, bin: &Path, server: &ModelServer, extra: &[(&str, &str)]) -> GitFixture {
    let repo = GitFixture::new();
    // Ignored by git (`logs/`), private to this repository.
    let state = repo.root().join("logs/agent-state");
    let global = repo.root().join("global-logs");
    let mut keys: Vec<(String, String)> = [
        ("run_naming_mode", "spec_slug".to_owned()),
        // The model requests are counted: no postmortem calls after the run.
        ("postmortem", "false".to_owned()),
        ("global_log_dir", global.display().to_string()),
        ("reviewer", "false".to_owned()),
        ("postmortem", "false".to_owned()),
        ("claude_timeout_sec", "120".to_owned()),
        ("claude_retry_backoff_sec", "0".to_owned()),
        ("claude_transient_retries", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    keys.extend(agent.keys(bin, server, &state));
    for (k, v) in extra {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = (*v).to_owned(),
            None => keys.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    let config: String = keys.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    repo.write_file(".loop/config", &config);
    repo.write_file("specs/widget.md", "# Widget\n\nBuild the widget.\n");
    let mut plan = String::from("# Widget plan\n\n## Tasks\n");
    for i in 1..=3 {
        plan.push_str(&format!("- [ ] Task number {i}\n"));
    }
    plan.push_str("- [ ]? Manual check\n");
    repo.write_file(PLAN_PATH, &plan);
    repo.write_file(".gitignore", "logs/\n");
    repo.commit_all("spec and plan");
    repo
}

/// Everything a finished run left behind, as loopd reports it.
struct Finished {
    run: RunResource,
    events: Vec<ApiEvent>,
    steps: Vec<StepResource>,
}

impl Finished {
    fn kinds(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.kind.as_str()).collect()
    }

    fn events_of(&self, kind: &str) -> Vec<&ApiEvent> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    fn steps_in(&self, phase: &str) -> Vec<&StepResource> {
        self.steps.iter().filter(|s| s.phase == phase).collect()
    }

    fn worktree_plan(&self) -> String {
        std::fs::read_to_string(self.run.worktree_path.join(PLAN_PATH)).expect("plan in worktree")
    }

    /// Successful implementation steps carry the CLI's token usage.
    fn assert_usage_recorded(&self) {
        let ok: Vec<_> = self
            .steps_in("implementation")
            .into_iter()
            .filter(|s| s.status == "SUCCEEDED")
            .collect();
        assert!(!ok.is_empty(), "{:#?}", self.steps);
        for step in ok {
            let usage = step.usage.as_ref().expect("usage from the event stream");
            assert!(usage.input_tokens.unwrap_or(0) > 0, "{usage:?}");
            assert!(usage.output_tokens.unwrap_or(0) > 0, "{usage:?}");
            assert!(!usage.is_error, "{usage:?}");
        }
    }
}

/// Creates the run through loopd and follows its events to the end.
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
    tokio::time::timeout(Duration::from_secs(420), follow)
        .await
        .expect("the run ends within 420 s");
    let run = client.get_run(id).await.expect("run");
    let steps = client.steps(id).await.expect("steps");
    Finished { run, events, steps }
}

async fn plan_with_reviewer(client: &Client, agent: Agent, bin: &Path) {
    let server = ModelServer::start(Script::plan_agent()).expect("model server starts");
    let repo = repo_for(agent, bin, &server, &[("reviewer", "true")]);
    // `loopctl prompt` says which agent would run.
    let preview = client
        .prompt(&create_request(&repo))
        .await
        .expect("prompt preview");
    assert!(
        preview.agent.starts_with(&format!("{} (", agent.name())),
        "{}",
        preview.agent
    );
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
    assert_eq!(
        f.events.last().map(|e| e.kind.as_str()),
        Some("RUN_COMPLETED")
    );
    assert_eq!((f.run.tasks_done, f.run.tasks_total), (3, 3));
    let counts = plan::counts(&f.worktree_plan());
    assert_eq!(
        (counts.pending, counts.to_review, counts.done),
        (0, 0, 3),
        "every task implemented and reviewed"
    );
    let log = repo.log_subjects(TARGET);
    assert_eq!(
        log.first().map(String::as_str),
        Some("loop: widget (3 of 3 tasks)"),
        "{log:?}"
    );
    for n in 1..=3 {
        let file = format!("scripted-work/task-{n}.md");
        assert!(repo.file_at(TARGET, &file).is_some(), "{file} on {TARGET}");
    }
    let merged_plan = repo.file_at(TARGET, PLAN_PATH).expect("plan on the target");
    assert!(merged_plan.contains("- [R] Task number 3"), "{merged_plan}");
    assert!(merged_plan.contains("- [ ]? Manual check"), "{merged_plan}");
    let run_log = repo.log_subjects(&f.run.run_branch);
    for subject in ["Task number 1", "Review: accept Task number 3"] {
        assert!(run_log.iter().any(|s| s == subject), "{run_log:?}");
    }
    assert_eq!(f.steps_in("implementation").len(), 3, "{:#?}", f.steps);
    assert_eq!(f.steps_in("review").len(), 3, "{:#?}", f.steps);
    let merge = f.events_of("MERGE_DONE");
    assert_eq!(merge.len(), 1, "{:?}", f.kinds());
    assert_eq!(merge[0].data["payload"]["outcome"], "merged", "{merge:?}");
    f.assert_usage_recorded();
    // The CLI's model requests: streamed, with the test key, two per step (the shell call and
    // the answer after its result).
    let requests = server.messages_requests();
    assert_eq!(requests.len(), 12, "two requests per step");
    let (header, value) = agent.key_header();
    for r in &requests {
        assert_eq!(r.header(header), Some(value), "{}", r.path);
        assert!(r.messages().expect("JSON body").stream(), "{}", r.path);
    }
    // Which agent ran is on record with each step.
    let started = f.events_of("STEP_STARTED");
    assert!(!started.is_empty());
    server.shutdown().await;
}

async fn api_key_refused(client: &Client, agent: Agent, bin: &Path) {
    let server = ModelServer::start(Script::always(Turn::Error {
        status: 401,
        body: None,
        retry_after: None,
    }))
    .expect("model server starts");
    let repo = repo_for(
        agent,
        bin,
        &server,
        &[("claude_retries", "2"), ("claude_transient_retries", "3")],
    );
    let started = Instant::now();
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Failed);
    assert_eq!(f.run.exit_reason.as_deref(), Some("claude_failed"));
    let reason = f.run.failure.clone().unwrap_or_default();
    eprintln!("real_{}: b) failure reason: {reason}", agent.name());
    assert!(reason.contains(agent.key_var()), "{reason}");
    assert!(reason.contains("401"), "{reason}");
    // Neither retried by the engine nor by the CLI more than its own few tries.
    assert!(!f.kinds().contains(&"CLAUDE_RETRY"), "{:?}", f.kinds());
    let steps = f.steps_in("implementation");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].status, "FAILED");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "fails fast: {:?}",
        started.elapsed()
    );
    let branches = repo.git(["branch", "--list", TARGET]);
    assert!(branches.trim().is_empty(), "nothing merged: {branches}");
    server.shutdown().await;
}

async fn transient_error(client: &Client, agent: Agent, bin: &Path) {
    let unavailable = || Turn::Error {
        status: 503,
        body: None,
        retry_after: None,
    };
    let server =
        ModelServer::start(Script::plan_agent().then(unavailable())).expect("model server starts");
    let mut extra = vec![
        ("claude_transient_retries", "3".to_owned()),
        ("claude_transient_backoff_max_sec", "1".to_owned()),
    ];
    if agent == Agent::Codex {
        // Codex retries a failed stream by itself; with no retries of its own the 503 reaches
        // the engine, which retries the step.
        extra.push((
            "codex_args",
            format!(
                "-c model_provider=test_provider -c 'model_providers.test_provider={{name=\"test\",base_url=\"{}/v1\",env_key=\"OPENAI_API_KEY\",wire_api=\"responses\",stream_max_retries=0,request_max_retries=0}}'",
                server.base_url()
            ),
        ));
    }
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let repo = repo_for(agent, bin, &server, &extra);
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert_eq!(f.run.exit_reason.as_deref(), Some("complete_plan"));
    assert_eq!(server.turns_left(), 0, "the 503 was served");
    let retries = f.events_of("CLAUDE_RETRY");
    assert_eq!(retries.len(), 1, "{:?}", f.kinds());
    let message = retries[0].data["payload"]["message"].as_str().unwrap_or("");
    assert_eq!(message, "attempt=1");
    // Why the step was retried, in run.log: the executor judged the 503 transient.
    let folder = f
        .run
        .workspace_root
        .join("logs/loop")
        .join(format!("run-{}", f.run.id));
    let run_log = std::fs::read_to_string(folder.join("run.log")).expect("run.log");
    assert!(
        run_log
            .lines()
            .any(|l| l.contains("transient retry") && l.contains("503")),
        "{run_log}"
    );
    let first = f.steps_in("implementation")[0];
    assert_eq!(first.status, "RETRYING", "{first:?}");
    assert_eq!(
        repo.log_subjects(TARGET).first().map(String::as_str),
        Some("loop: widget (3 of 3 tasks)")
    );
    server.shutdown().await;
}

async fn stalled_model(client: &Client, agent: Agent, bin: &Path) {
    let server =
        ModelServer::start(Script::plan_agent().then(Turn::Stall)).expect("model server starts");
    let idle = agent.idle_timeout_sec();
    let repo = repo_for(
        agent,
        bin,
        &server,
        &[
            ("claude_idle_timeout_sec", &idle.to_string()),
            ("claude_retries", "1"),
        ],
    );
    let f = run_to_end(client, &repo).await;
    assert_eq!(f.run.status, RunStatus::Completed, "{:?}", f.run.failure);
    assert_eq!(f.run.exit_reason.as_deref(), Some("complete_plan"));
    let first = f.steps_in("implementation")[0];
    assert_eq!(first.exit_code, Some(124), "{first:?}");
    assert_eq!(first.status, "RETRYING");
    assert_eq!(first.label, "1A1");
    assert!(
        first.duration_ms.unwrap_or(0) >= i64::try_from(idle * 1000).unwrap_or(i64::MAX),
        "{first:?}"
    );
    let timeout = f.events_of("ITERATION_TIMEOUT");
    assert_eq!(timeout.len(), 1, "{:?}", f.kinds());
    assert_eq!(timeout[0].data["payload"]["exit_code"], 124, "{timeout:?}");
    assert_eq!(plan::counts(&f.worktree_plan()).pending, 0);
    assert!(repo.file_at(TARGET, "scripted-work/task-3.md").is_some());
    server.shutdown().await;
}
