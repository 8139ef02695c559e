//! `loopctl demo`: a first run anyone can try. Creates a small sample project (a spec and a
//! 3-task plan in a fresh git repository), starts a private loopd if none is reachable, and
//! runs the plan with live progress to the end, then shows where the artifacts are. The agent
//! is the real Claude CLI talking to a scripted model server on 127.0.0.1 (no network, no API
//! key) when the CLI is installed (`CLAUDE_BIN`, `claude` on PATH, or `bin/install-claude`'s
//! folder), else the built-in simulated agent, clearly labelled as a simulation. The scripted
//! model is a separate program (`test-support/scripted-model`, the binary next to this one,
//! started like the private loopd), so loopctl itself does not link a test server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use loop_engine::process::Cmd;
use loop_http::Client;
use loop_http::api::CreateRunRequest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::cli::{Cli, DemoArgs};
use crate::commands::{Ctx, out, token};
use crate::render;

const SPEC: &str = "# Greeter\n\nA tiny command-line greeter, built task by task by the agent loop.\n\n\
## Behaviour\n\n- `greet NAME` prints `Hello, NAME!`.\n- Without a name it greets the world.\n";

const PLAN: &str = "# Greeter plan\n\n## Tasks\n\
- [ ] Write the greeting function\n\
- [ ] Add the command-line entry point\n\
- [ ] Document usage in the README\n\n\
## Manual QA\n- [ ]? Try it by hand\n";

async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Cmd::new("git", dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "loop demo")
        .env("GIT_AUTHOR_EMAIL", "demo@localhost")
        .env("GIT_COMMITTER_NAME", "loop demo")
        .env("GIT_COMMITTER_EMAIL", "demo@localhost")
        .output()
        .await
        .context("cannot run git (is it installed?)")?;
    if !out.success() {
        bail!("git {} failed: {}", args.join(" "), out.stderr_text());
    }
    Ok(())
}

/// How the demo's agent runs.
enum Agent {
    /// The built-in simulated agent.
    Simulated,
    /// The real CLI through a wrapper script that points it at the scripted model.
    RealCli { wrapper: PathBuf },
}

/// The Claude CLI, if installed: `CLAUDE_BIN`, else `claude` on `PATH`.
fn find_claude() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CLAUDE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("claude"))
        .find(|p| p.is_file())
}

/// The scripted model server (the `scripted-model` program), running while the demo does.
struct Model {
    base_url: String,
    /// The script that runs the CLI against this model (and nothing else): the `claude_bin`.
    wrapper: PathBuf,
    /// Killed when dropped.
    child: tokio::process::Child,
}

impl Model {
    /// Stops the server and waits for it to end.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The first line the model server prints, before the URL.
const LISTENING: &str = "scripted model listening on ";

/// Starts the scripted model next to this binary, with a wrapper script for `claude` in the
/// project's `.loop/`. `Ok(None)` when the program is not there (the demo then simulates).
async fn start_model(dir: &Path, claude: &Path) -> anyhow::Result<Option<Model>> {
    let exe = std::env::current_exe().context("cannot find loopctl's own path")?;
    let program = exe.with_file_name("scripted-model");
    if !program.is_file() {
        return Ok(None);
    }
    let wrapper = dir.join(".loop/claude-demo.sh");
    let mut cmd = Cmd::new(&program, dir)
        .args(["--listen", "127.0.0.1:0", "--wrapper"])
        .arg(&wrapper)
        .arg("--claude")
        .arg(claude)
        .args(["--export", "CLAUDE_CODE_MAX_RETRIES=1"])
        .to_tokio();
    // Both pipes are captured: stdout for the URL, stderr for why it did not start.
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from the scripted model")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let base_url = match first {
        Ok(Ok(Some(line))) => line.strip_prefix(LISTENING).map(str::to_owned),
        _ => None,
    };
    let Some(base_url) = base_url else {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), pipe.read_to_string(&mut stderr))
                .await;
        }
        bail!(
            "the scripted model ({}) did not start: {}",
            program.display(),
            stderr.trim()
        );
    };
    // The rest of what it prints is for people running it by hand.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Some(Model {
        base_url,
        wrapper,
        child,
    }))
}

async fn create_project(dir: &Path, agent: &Agent) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("specs/planning"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("specs/greeter.md"), SPEC)?;
    std::fs::write(dir.join("specs/planning/greeter-plan.md"), PLAN)?;
    std::fs::write(dir.join(".gitignore"), "logs/\n")?;
    let mut config = String::from(
        "# agent-loop demo configuration\nrun_naming_mode=spec_slug\nreviewer=true\nverify_cmds=test -f specs/planning/greeter-plan.md\n# The demo's daemon stops with the run: no postmortem at its end.\npostmortem=false\n",
    );
    match agent {
        Agent::Simulated => {
            config.push_str(
                "# The built-in simulated agent: no model, no network.\nexecutor=simulate\n",
            );
        }
        Agent::RealCli { wrapper } => {
            config.push_str(&format!(
                "# The real Claude CLI against a local scripted model.\nexecutor=claude\nclaude_bin={}\nclaude_timeout_sec=120\nclaude_retries=1\n",
                wrapper.display()
            ));
        }
    }
    std::fs::write(dir.join(".loop/config"), config)?;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    git(dir, &["add", "-A"]).await?;
    git(dir, &["commit", "-q", "-m", "demo project: spec and plan"]).await?;
    Ok(())
}

/// Starts a private loopd (the binary next to this one) on a free port.
async fn start_daemon(
    dir: &Path,
    sandbox: bool,
) -> anyhow::Result<(tokio::process::Child, Client)> {
    let exe = std::env::current_exe().context("cannot find loopctl's own path")?;
    let loopd = exe.with_file_name("loopd");
    if !loopd.exists() {
        bail!(
            "no loopd is running and {} does not exist; start loopd first (cargo run --release -p loopd)",
            loopd.display()
        );
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
        l.local_addr()?.port()
    };
    let data = dir.join(".loopd-data");
    let token = loop_http::auth::generate_token().context("cannot generate a token")?;
    let mut cmd = Cmd::new(&loopd, dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data)
        .env("LOOPD_TOKEN", &token);
    if sandbox {
        cmd = cmd.env("IS_SANDBOX", "1");
    }
    let mut cmd = cmd.to_tokio();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", loopd.display()))?;
    let client = Client::new(&format!("http://127.0.0.1:{port}"), Some(token))?;
    client.wait_ready(Duration::from_secs(10)).await?;
    Ok((child, client))
}

pub(crate) async fn demo(cli: &Cli, a: &DemoArgs) -> anyhow::Result<()> {
    let dir: PathBuf = match &a.dir {
        Some(d) => d.clone(),
        None => tempfile::Builder::new()
            .prefix("loop-demo-")
            .tempdir()
            .context("cannot create a temp folder")?
            .keep(),
    };
    std::fs::create_dir_all(dir.join(".loop"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let claude = if a.simulate {
        None
    } else {
        // CLAUDE_BIN, `claude` on PATH, else where `bin/install-claude` put it.
        find_claude().or_else(loop_engine::impls::installed_claude)
    };
    // The scripted model lives as long as the demo: it answers the CLI like a model would.
    let model = match &claude {
        Some(bin) => {
            let model = start_model(&dir, bin).await?;
            if model.is_none() {
                out(
                    "the Claude CLI is installed, but the scripted model it would talk to is not built next to loopctl (cargo build --release -p scripted-model); simulating instead",
                );
            }
            model
        }
        None => None,
    };
    let agent = match &model {
        Some(m) => Agent::RealCli {
            wrapper: m.wrapper.clone(),
        },
        None => Agent::Simulated,
    };
    create_project(&dir, &agent).await?;
    out(&format!("sample project: {}", dir.display()));
    let root = loop_engine::process::effective_uid() == Some(0);
    match (&agent, &claude, &model) {
        (Agent::RealCli { .. }, Some(bin), Some(m)) => {
            out(&format!(
                "agent: the real Claude CLI ({}) against a scripted model at {} (no network, no API key)",
                bin.display(),
                m.base_url
            ));
            out(
                "costs shown are what the CLI computes from the scripted model's token counts: nothing is billed",
            );
            if root {
                out(
                    "running as root: the demo's private loopd gets IS_SANDBOX=1 so the CLI accepts --dangerously-skip-permissions; its agent only talks to the local scripted model",
                );
            }
        }
        _ => out(
            "agent: SIMULATION: the built-in simulated agent works the plan (no model, no network; install the Claude CLI to see the real one)",
        ),
    }
    let real = matches!(agent, Agent::RealCli { .. });

    let shared = Client::new(&cli.addr, token(cli.token.clone()))?;
    // A shared daemon runs agents with its own environment; the real-CLI demo as root needs
    // IS_SANDBOX=1, so it always gets a private daemon then.
    let use_shared = !(real && root) && shared.wait_ready(Duration::from_millis(600)).await.is_ok();
    let (daemon, client) = if use_shared {
        (None, shared)
    } else {
        out(&format!(
            "starting a private loopd for the demo (none used at {})",
            cli.addr
        ));
        let (child, client) = start_daemon(&dir, real && root).await?;
        (Some(child), client)
    };
    let ctx = Ctx {
        client,
        json: false,
        colour: render::colour(),
        // The scripted model answers for free: whatever the CLI computes is not billed.
        costs: render::Costs::Scripted,
    };
    let created = ctx
        .client
        .create_run(&CreateRunRequest {
            spec_path: "specs/greeter.md".into(),
            plan_path: None,
            workspace_root: dir.clone(),
            config_override: None,
            config_file: None,
            cwd: Some(dir.clone()),
            name: None,
            name_source: None,
            merge_target_branch: None,
            merge_strategy: None,
        })
        .await?;
    let id = created.run.id;
    out(&format!("run {id} ({})", created.run.name));
    crate::commands::tail::follow(&ctx, id, false).await?;
    let run = ctx.client.get_run(id).await?;
    let steps = ctx.client.steps(id).await?;
    let artifacts = ctx.client.artifacts(id).await?;
    out("");
    out(&render::inspect(
        &run, &steps, &artifacts, ctx.colour, ctx.costs,
    ));
    out(&format!(
        "artifacts: {}",
        dir.join("logs/loop").join(format!("run-{id}")).display()
    ));
    // Claim a merge only when one landed: a completed run whose merge step succeeded
    // without a reason (a pending merge keeps its reason on the step).
    let completed = run.status == loop_engine::domain::RunStatus::Completed;
    let merged = completed
        && steps
            .iter()
            .rev()
            .find(|s| s.phase == "merge")
            .is_some_and(|s| s.status == "SUCCEEDED" && s.reason.is_none());
    match &run.merge_target_branch {
        Some(target) if merged => out(&format!(
            "the work is merged into branch {target} in {}",
            dir.display()
        )),
        Some(target) if completed => out(&format!(
            "the work is on branch {}; its merge into {target} waits (see `loopctl inspect {id}`)",
            run.run_branch
        )),
        _ => out(&format!(
            "the work so far is on branch {} (not merged)",
            run.run_branch
        )),
    }
    if let Some(mut child) = daemon {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if let Some(model) = model {
        model.stop().await;
    }
    if !run.status.is_terminal() || run.status != loop_engine::domain::RunStatus::Completed {
        bail!("the demo run ended {}", run.status);
    }
    Ok(())
}
