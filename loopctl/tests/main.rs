//! loopctl against a real server on 127.0.0.1 (the loop-http server with an in-process engine
//! and the simulated agent): every command's `--json` output parses, the rendered `inspect`
//! and `tail` output has the expected shape, and exit codes follow the README's table.

use std::path::Path;
use std::time::Duration;

use loop_engine::backend::{ExecPurpose, Executor};
use loop_engine::engine::{Engine, EngineSettings};
use loop_engine::impls::{GitCli, MemoryStore, SimulatedAgent};
use loop_engine::process::{Cmd, CmdOutput};
use loop_engine::testing::{Act, GitFixture, ScriptedExecutor};
use loop_http::{ServerOptions, serve};
use tokio_util::sync::CancellationToken;

mod review;

const TOKEN: &str = "test-token-123";

struct Daemon {
    addr: String,
    repo: GitFixture,
    shutdown: CancellationToken,
    engine: Engine,
    listen: std::net::SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn fixture() -> GitFixture {
    let repo = GitFixture::new();
    repo.write_file(
        ".loop/config",
        &format!(
            "reviewer=false\nrun_naming_mode=spec_slug\nglobal_log_dir={}\npostmortem=false\n",
            repo.root().join("global").display()
        ),
    );
    repo.write_file(".gitignore", "logs/\n");
    repo.write_file("specs/widget.md", "# Widget\n");
    repo.write_file(
        "specs/planning/widget-plan.md",
        "- [ ] first task\n- [ ] second task\n",
    );
    repo.commit_all("spec and plan");
    repo
}

async fn daemon(delay_ms: u64) -> Daemon {
    let repo = fixture();
    let agent = SimulatedAgent::new()
        .with_delay(Duration::from_millis(delay_ms))
        .with_git_env(repo.env());
    daemon_with(repo, agent).await
}

async fn daemon_with(repo: GitFixture, executor: impl Executor + 'static) -> Daemon {
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .executor(executor)
        .vcs(GitCli::with_env(repo.env()))
        .settings(EngineSettings::default())
        .build()
        .expect("engine");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listen = listener.local_addr().expect("addr");
    let addr = format!("http://{listen}");
    {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run().await });
    }
    let shutdown = serve_on(listener, engine.clone());
    Daemon {
        addr,
        repo,
        shutdown,
        engine,
        listen,
    }
}

fn serve_on(listener: tokio::net::TcpListener, engine: Engine) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        serve(
            listener,
            engine,
            ServerOptions::new(TOKEN.to_owned()),
            token,
        )
        .await
    });
    shutdown
}

async fn loopctl(d: &Daemon, cwd: &Path, args: &[&str]) -> CmdOutput {
    Cmd::new(env!("CARGO_BIN_EXE_loopctl"), cwd)
        .args(["--addr", &d.addr, "--token", TOKEN])
        .args(args)
        .env("NO_COLOR", "1")
        .timeout(Some(Duration::from_secs(60)))
        .output()
        .await
        .expect("loopctl runs")
}

fn json(out: &CmdOutput) -> serde_json::Value {
    assert!(out.success(), "exit {}: {}", out.code, out.stderr_text());
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output must parse ({e}): {}", out.stdout_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_inspect_list_logs_with_json() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let created = json(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["name"], "widget");
    assert_eq!(created["run_branch"], "run/widget");

    let waited = loopctl(&d, &repo, &["wait", &id]).await;
    assert_eq!(
        waited.code,
        0,
        "wait exits 0 on COMPLETED: {}",
        waited.stderr_text()
    );
    assert!(waited.stdout_text().contains("COMPLETED"));

    let inspected = json(&loopctl(&d, &repo, &["--json", "inspect", &id]).await);
    assert_eq!(inspected["run"]["status"], "COMPLETED");
    assert!(inspected["steps"].as_array().expect("steps").len() >= 2);

    let listed = json(&loopctl(&d, &repo, &["--json", "list", "--status", "completed"]).await);
    assert_eq!(listed.as_array().expect("runs").len(), 1);

    // The rendered inspect view: aligned keys, the steps table, the artifact paths.
    let text = loopctl(&d, &repo, &["inspect", &id]).await.stdout_text();
    let masked = text.replace(&id, "<id>");
    let lines: Vec<&str> = masked.lines().collect();
    assert_eq!(lines[0], "id           <id>");
    assert_eq!(lines[1], "name         widget (spec_slug)");
    assert_eq!(lines[2], "status       COMPLETED");
    assert_eq!(lines[3], "exit reason  complete_plan");
    // The agent row names what the run's config asks for (this daemon's executor is a
    // scripted one, its config the default `claude`).
    assert_eq!(
        lines[4],
        "agent        claude (claude_bin claude, model opus)"
    );
    assert_eq!(lines[5], "tasks        2/2 done");
    assert!(
        masked.contains("\nsteps:\n#  LABEL  PHASE           STATUS     EXIT  TIME"),
        "{masked}"
    );
    assert!(masked.contains("\nartifacts:\nKIND"), "{masked}");
    assert!(masked.contains("summary.json"), "{masked}");
    assert!(masked.contains("\nlast step    #"), "{masked}");
    assert!(
        !masked.contains("merge merge"),
        "a step named like its phase, once: {masked}"
    );

    // The stored log of the first agent step.
    let logs = loopctl(&d, &repo, &["logs", &id, "--step", "1"]).await;
    assert!(logs.success(), "{}", logs.stderr_text());
    assert!(
        logs.stdout_text().contains("Completed first task"),
        "{}",
        logs.stdout_text()
    );

    // tail on a finished run prints the last step's output and the final status line.
    let tail = loopctl(&d, &repo, &["tail", &id]).await;
    assert!(tail.success(), "{}", tail.stderr_text());
    let t = tail.stdout_text();
    assert!(t.contains("<promise>COMPLETE</promise>"), "{t}");
    assert!(
        t.lines().last().unwrap_or("").starts_with("[COMPLETED] "),
        "{t}"
    );
    // Off a terminal the status line is printed when it changes (and once at the end), not
    // repeated; a step whose label is its phase is named once.
    let status_lines = t.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(status_lines, 2, "{t}");
    assert!(!t.contains("merge merge"), "{t}");

    let prompt = loopctl(&d, &repo, &["prompt", "specs/widget.md"]).await;
    assert!(prompt.success(), "{}", prompt.stderr_text());
    assert!(prompt.stdout_text().starts_with('@'), "context line first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_a_live_run_to_the_end() {
    let d = daemon(150).await;
    let repo = d.repo.path().to_path_buf();
    let created = json(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let id = created["id"].as_str().expect("id").to_owned();
    let tail = loopctl(&d, &repo, &["tail", &id]).await;
    assert!(tail.success(), "{}", tail.stderr_text());
    let t = tail.stdout_text();
    // Both agent answers, once each, in order, then the final status.
    let first = t.find("Completed first task").expect("first answer");
    let second = t
        .find("<promise>COMPLETE</promise>")
        .expect("second answer");
    assert!(first < second);
    assert_eq!(t.matches("Completed first task").count(), 1, "{t}");
    assert!(t.contains("| tasks 2/2 |"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_documented_exit_codes() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let bad_id = loopctl(&d, &repo, &["inspect", "not-a-uuid"]).await;
    assert_eq!(bad_id.code, 66, "no run has that name or prefix");
    assert!(
        bad_id.stderr_text().contains("no run matches `not-a-uuid`"),
        "{}",
        bad_id.stderr_text()
    );
    let unknown = loopctl(
        &d,
        &repo,
        &["inspect", "01a20f00-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(unknown.code, 66, "{}", unknown.stderr_text());
    let bad_config = loopctl(
        &d,
        &repo,
        &["run", "specs/widget.md", "--set", "iterations=lots"],
    )
    .await;
    assert_eq!(bad_config.code, 65);
    let msg = bad_config.stderr_text();
    assert!(msg.contains("iterations") && msg.contains("lots"), "{msg}");
    let missing = loopctl(&d, &repo, &["run", "specs/nope.md"]).await;
    assert_eq!(missing.code, 65, "{}", missing.stderr_text());
    let wrong_token = Cmd::new(env!("CARGO_BIN_EXE_loopctl"), &repo)
        .args(["--addr", &d.addr, "--token", "wrong", "list"])
        .output()
        .await
        .expect("runs");
    assert_eq!(wrong_token.code, 77, "{}", wrong_token.stderr_text());
    assert!(wrong_token.stderr_text().contains("LOOPD_TOKEN"));
    let started = std::time::Instant::now();
    let down = Cmd::new(env!("CARGO_BIN_EXE_loopctl"), &repo)
        .args(["--addr", "http://127.0.0.1:9", "list"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .expect("runs");
    assert_eq!(down.code, 69);
    let stderr = down.stderr_text();
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    // The wait is announced first, and the error is a plain line, not a stack trace.
    assert!(
        stderr.starts_with("loopctl: waiting for loopd at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the backoff still runs"
    );
}

fn created_id(out: &CmdOutput) -> String {
    json(out)["id"].as_str().expect("id").to_owned()
}

/// Runs are named by a unique id prefix, their name, or `last`; an ambiguous prefix or name
/// lists the candidates (issue 19 item 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_found_by_prefix_name_or_last() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let first = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    assert_eq!(loopctl(&d, &repo, &["wait", &first]).await.code, 0);
    // A second spec with open tasks (the first run's plan is done now).
    d.repo.write_file("specs/gadget.md", "# Gadget\n");
    d.repo
        .write_file("specs/planning/gadget-plan.md", "- [ ] only task\n");
    d.repo.commit_all("gadget spec");
    let second = created_id(
        &loopctl(
            &d,
            &repo,
            &["--json", "run", "specs/gadget.md", "--name", "second-one"],
        )
        .await,
    );
    // The second run works its own plan to the end.
    assert_eq!(loopctl(&d, &repo, &["wait", "last"]).await.code, 0);

    let shown = |out: &CmdOutput| json(out)["run"]["id"].as_str().unwrap_or("").to_owned();
    // `last` is the newest run.
    assert_eq!(
        shown(&loopctl(&d, &repo, &["--json", "inspect", "last"]).await),
        second
    );
    // By name.
    assert_eq!(
        shown(&loopctl(&d, &repo, &["--json", "inspect", "second-one"]).await),
        second
    );
    assert_eq!(
        shown(&loopctl(&d, &repo, &["--json", "inspect", "widget"]).await),
        first
    );
    // By the shortest prefix that tells them apart (ids of one session share a long start).
    let common = first
        .chars()
        .zip(second.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let unique = &second[..=common];
    assert_eq!(
        shown(&loopctl(&d, &repo, &["--json", "inspect", unique]).await),
        second
    );
    assert_eq!(
        shown(&loopctl(&d, &repo, &["--json", "inspect", &unique.to_uppercase()]).await),
        second,
        "prefixes are case-insensitive"
    );
    // A prefix both share is ambiguous: a usage error naming both.
    let ambiguous = loopctl(&d, &repo, &["inspect", &first[..common.max(1)]]).await;
    assert_eq!(ambiguous.code, 64, "{}", ambiguous.stderr_text());
    let err = ambiguous.stderr_text();
    assert!(
        err.contains("ambiguous") && err.contains(&first) && err.contains(&second),
        "{err}"
    );
    // Every command takes the short forms.
    let logs = loopctl(&d, &repo, &["logs", "widget", "--step", "1"]).await;
    assert!(logs.success(), "{}", logs.stderr_text());
    let tail = loopctl(&d, &repo, &["tail", "second-one"]).await;
    assert_eq!(tail.code, 0, "{}", tail.stderr_text());
}

/// `tail` exits like `wait`: 2 for a canceled run, 1 for a failed one (issue 19 item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_exits_like_wait() {
    let d = daemon(300).await;
    let repo = d.repo.path().to_path_buf();
    let canceled = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    assert_eq!(loopctl(&d, &repo, &["cancel", &canceled]).await.code, 0);
    let tail = loopctl(&d, &repo, &["tail", &canceled]).await;
    assert_eq!(tail.code, 2, "{}{}", tail.stdout_text(), tail.stderr_text());
    assert!(
        tail.stdout_text().contains("[CANCELED]"),
        "{}",
        tail.stdout_text()
    );

    let failed = created_id(
        &loopctl(
            &d,
            &repo,
            &[
                "--json",
                "run",
                "specs/widget.md",
                "--set",
                "verify_cmds=false",
                "--set",
                "max_consecutive_verification_failures=1",
            ],
        )
        .await,
    );
    let tail = loopctl(&d, &repo, &["tail", &failed]).await;
    assert_eq!(tail.code, 1, "{}{}", tail.stdout_text(), tail.stderr_text());
    assert!(
        tail.stdout_text().contains("[FAILED]"),
        "{}",
        tail.stdout_text()
    );
}

/// A stream that ends cleanly while the run goes on (a daemon shutting down gracefully and
/// coming back) makes `tail` reconnect, not exit (issue 19 item 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reconnects_after_a_graceful_restart() {
    let mut d = daemon(1500).await;
    let repo = d.repo.path().to_path_buf();
    let id = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let tail = Cmd::new(env!("CARGO_BIN_EXE_loopctl"), &repo)
        .args(["--addr", &d.addr, "--token", TOKEN, "tail", &id])
        .env("NO_COLOR", "1")
        .timeout(Some(Duration::from_secs(60)))
        .output();
    let restart = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Graceful: the server ends its streams and stops listening; the engine runs on.
        d.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let listener = tokio::net::TcpListener::bind(d.listen)
            .await
            .expect("the same address again");
        d.shutdown = serve_on(listener, d.engine.clone());
    };
    let (out, ()) = tokio::join!(tail, restart);
    let out = out.expect("tail runs");
    let t = out.stdout_text();
    assert_eq!(out.code, 0, "{t}{}", out.stderr_text());
    assert!(t.contains("<promise>COMPLETE</promise>"), "{t}");
    assert!(
        t.lines().last().unwrap_or("").starts_with("[COMPLETED] "),
        "{t}"
    );
    // Nothing is printed twice across the reconnect.
    assert!(t.matches("Completed first task").count() <= 1, "{t}");
    assert_eq!(t.matches("<promise>COMPLETE</promise>").count(), 1, "{t}");
}

/// `logs` renders a stream-json step log like `tail`; `--raw` prints it as stored (issue 19
/// item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_rendered_unless_raw() {
    let repo = fixture();
    // A stream-json answer, one text with a lone surrogate escape (the CLI writes those).
    let stream = concat!(
        r#"{"type":"system","subtype":"init","model":"opus"}"#,
        "\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Looked \udcff around."}]}}"#,
        "\n",
        r#"{"type":"result","is_error":false,"num_turns":2,"total_cost_usd":0.5,"result":"Looked around."}"#,
        "\n",
    );
    let agent = ScriptedExecutor::new([(ExecPurpose::Implementation, Act::Reply(stream.into()))])
        .then_agent()
        .with_git_env(repo.env());
    let d = daemon_with(repo, agent).await;
    let repo = d.repo.path().to_path_buf();
    let id = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    assert_eq!(loopctl(&d, &repo, &["wait", &id]).await.code, 0);
    let raw = loopctl(&d, &repo, &["logs", &id, "--step", "1", "--raw"]).await;
    assert!(raw.success(), "{}", raw.stderr_text());
    assert!(
        raw.stdout_text().contains(r#""type":"result""#),
        "{}",
        raw.stdout_text()
    );
    let rendered = loopctl(&d, &repo, &["logs", &id, "--step", "1"]).await;
    assert!(rendered.success(), "{}", rendered.stderr_text());
    let text = rendered.stdout_text();
    assert!(!text.contains(r#""type""#), "rendered, not JSON: {text}");
    assert!(
        text.contains(
            "· agent started (model opus)\nLooked \u{fffd} around.\n✓ done in 2 turns, $0.5000"
        ),
        "{text}"
    );
}

/// `tail` renders live stream-json lines with lone surrogate escapes (a high one alone, two
/// high ones in a row, a low one) through the engine's parser, not as raw JSON (issue 13
/// item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_renders_lines_with_lone_surrogates() {
    let repo = fixture();
    let stream = concat!(
        r#"{"type":"system","subtype":"init","model":"opus"}"#,
        "\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"High \ud800 alone, \ud800\ud800 twice, low \udc00, pair \ud83d\ude00."}]}}"#,
        "\n",
        r#"{"type":"result","is_error":false,"num_turns":1,"result":"Looked around."}"#,
        "\n",
    );
    let agent = ScriptedExecutor::new([(ExecPurpose::Implementation, Act::Reply(stream.into()))])
        .then_agent()
        .with_delay(Duration::from_millis(400))
        .with_git_env(repo.env());
    let d = daemon_with(repo, agent).await;
    let repo = d.repo.path().to_path_buf();
    let id = created_id(&loopctl(&d, &repo, &["--json", "run", "specs/widget.md"]).await);
    let tail = loopctl(&d, &repo, &["tail", &id]).await;
    assert_eq!(tail.code, 0, "{}", tail.stderr_text());
    let t = tail.stdout_text();
    assert!(!t.contains(r#""type""#), "rendered, not JSON: {t}");
    assert!(
        t.contains("High \u{fffd} alone, \u{fffd}\u{fffd} twice, low \u{fffd}, pair 😀."),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_checkout_is_warned_at_run_and_the_pending_merge_is_shown() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let clean = loopctl(&d, &repo, &["run", "specs/widget.md", "--name", "clean"]).await;
    assert!(clean.success(), "{}", clean.stderr_text());
    assert!(
        !clean.stderr_text().contains("uncommitted"),
        "{}",
        clean.stderr_text()
    );
    let clean_id = created_id_text(&clean);
    assert_eq!(loopctl(&d, &repo, &["wait", &clean_id]).await.code, 0);

    d.repo
        .write_file("specs/widget.md", "# Widget\n\nmy unsaved edit\n");
    let created = loopctl(
        &d,
        &repo,
        &[
            "run",
            "specs/widget.md",
            "--merge-target",
            "main",
            "--name",
            "dirty",
        ],
    )
    .await;
    assert!(created.success(), "{}", created.stderr_text());
    let stderr = created.stderr_text();
    let warning: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("uncommitted changes to tracked files"))
        .collect();
    assert_eq!(warning.len(), 1, "one warning line: {stderr}");
    assert!(warning[0].contains("specs/widget.md"), "{stderr}");
    assert!(
        warning[0].contains("will not touch your checkout"),
        "{stderr}"
    );
    assert!(warning[0].contains("MERGE_PENDING"), "{stderr}");
    let id = created_id_text(&created);
    let waited = loopctl(&d, &repo, &["wait", &id]).await;
    assert_eq!(waited.code, 0, "{}", waited.stderr_text());
    let shown = loopctl(&d, &repo, &["inspect", &id]).await;
    let text = shown.stdout_text();
    let line = text
        .lines()
        .find(|l| l.contains("the merge into main waits: "))
        .unwrap_or_else(|| panic!("no pending merge line: {text}"));
    assert!(line.contains("uncommitted changes"), "{line}");
    let tailed = loopctl(&d, &repo, &["tail", &id]).await;
    assert_eq!(tailed.code, 0, "{}", tailed.stderr_text());
    assert!(
        tailed
            .stdout_text()
            .lines()
            .any(|l| l.starts_with("the merge into main waits: ")),
        "{}",
        tailed.stdout_text()
    );
}

/// The run id that `loopctl run` printed (`<id> <name>`).
fn created_id_text(out: &CmdOutput) -> String {
    out.stdout_text()
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// The postmortem from the command line (issue 14 item 4): a run with `postmortem=true` is
/// analysed at its end and `inspect` shows the summary's first lines; `analyze --latest
/// --prompt-only` writes the prompts and runs nothing; `analyze` of a run still going is
/// refused (409 → exit 65).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_and_inspect_show_the_postmortem() {
    let d = daemon(0).await;
    let repo = d.repo.path().to_path_buf();
    let out = loopctl(
        &d,
        &repo,
        &[
            "--json",
            "run",
            "specs/widget.md",
            "--set",
            "postmortem=true",
        ],
    )
    .await;
    let id = created_id(&out);
    let waited = loopctl(&d, &repo, &["wait", &id]).await;
    assert_eq!(waited.code, 0, "{}", waited.stderr_text());
    // The postmortem follows the end: wait for its summary.
    let run_id: loop_engine::domain::RunId = id.parse().expect("id");
    let mut listing = d.engine.postmortem_listing(run_id).await.expect("listing");
    for _ in 0..200 {
        if !listing.running && listing.last_status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        listing = d.engine.postmortem_listing(run_id).await.expect("listing");
    }
    let text = loopctl(&d, &repo, &["inspect", &id]).await.stdout_text();
    assert!(text.contains("\npostmortem: "), "{text}");
    assert!(text.contains("(status=ok files=13"), "{text}");
    assert!(text.contains("\n  # Simulated postmortem\n"), "{text}");
    assert!(text.contains("analysis/summary.md)"), "{text}");

    // By hand, prompts only, for the newest run that ended.
    let analyzed = loopctl(&d, &repo, &["analyze", "--latest", "--prompt-only"]).await;
    assert!(analyzed.success(), "{}", analyzed.stderr_text());
    let shown = analyzed.stdout_text();
    assert!(
        shown.contains(&format!("postmortem of run {id} under way: ")),
        "{shown}"
    );
    assert!(shown.contains("spec-compliance-prompt.txt"), "{shown}");
    let listed = json(&loopctl(&d, &repo, &["--json", "analyze", &id, "--prompt-only"]).await);
    assert_eq!(listed["running"], false);
    assert_eq!(listed["last_status"], "ok");
    assert!(
        listed["last_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("status=ok")),
        "{listed}"
    );

    // A run that has not ended is refused (409); so is a missing one (404).
    let slow = daemon(5000).await;
    let slow_repo = slow.repo.path().to_path_buf();
    let going =
        created_id(&loopctl(&slow, &slow_repo, &["--json", "run", "specs/widget.md"]).await);
    let refused = loopctl(&slow, &slow_repo, &["analyze", &going]).await;
    assert_eq!(refused.code, 65, "{}", refused.stderr_text());
    assert!(
        refused.stderr_text().contains("has ended"),
        "{}",
        refused.stderr_text()
    );
    let missing = loopctl(
        &d,
        &repo,
        &["analyze", "0190aaaa-0000-7000-8000-000000000000"],
    )
    .await;
    assert_eq!(missing.code, 66, "{}", missing.stderr_text());
}
