//! `loopctl demo`: a first run anyone can try. Creates a small sample project (a spec and a
//! 3-task plan in a fresh git repository), starts a private loopd if none is reachable, runs
//! the plan with the built-in simulated agent (clearly labelled; `--real` uses the configured
//! Claude CLI instead) and shows live progress to the end and where the artifacts are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use loop_engine::process::Cmd;
use loop_http::Client;
use loop_http::api::CreateRunRequest;

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

async fn create_project(dir: &Path, real: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("specs/planning"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::create_dir_all(dir.join(".loop"))?;
    std::fs::write(dir.join("specs/greeter.md"), SPEC)?;
    std::fs::write(dir.join("specs/planning/greeter-plan.md"), PLAN)?;
    std::fs::write(dir.join(".gitignore"), "logs/\n")?;
    let mut config = String::from(
        "# agent-loop demo configuration\nrun_naming_mode=spec_slug\nreviewer=true\nverify_cmds=test -f specs/planning/greeter-plan.md\n",
    );
    if !real {
        config
            .push_str("# The built-in simulated agent: no model, no network.\nexecutor=simulate\n");
    }
    std::fs::write(dir.join(".loop/config"), config)?;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    git(dir, &["add", "-A"]).await?;
    git(dir, &["commit", "-q", "-m", "demo project: spec and plan"]).await?;
    Ok(())
}

/// Starts a private loopd (the binary next to this one) on a free port.
async fn start_daemon(dir: &Path) -> anyhow::Result<(tokio::process::Child, Client)> {
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
        .env("LOOPD_TOKEN", &token)
        .to_tokio();
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
    create_project(&dir, a.real).await?;
    out(&format!("sample project: {}", dir.display()));
    if a.real {
        out("agent: the Claude CLI configured for loopd (claude_bin)");
    } else {
        out(
            "agent: SIMULATION: the built-in simulated agent works the plan (no model, no network)",
        );
    }

    let shared = Client::new(&cli.addr, token(cli.token.clone()))?;
    let (daemon, client) = match shared.wait_ready(Duration::from_millis(600)).await {
        Ok(_) => (None, shared),
        Err(_) => {
            out(&format!(
                "no loopd at {}: starting a private one for the demo",
                cli.addr
            ));
            let (child, client) = start_daemon(&dir).await?;
            (Some(child), client)
        }
    };
    let ctx = Ctx {
        client,
        json: false,
        colour: render::colour(),
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
    crate::commands::tail::follow(&ctx, id).await?;
    let run = ctx.client.get_run(id).await?;
    let steps = ctx.client.steps(id).await?;
    let artifacts = ctx.client.artifacts(id).await?;
    out("");
    out(&render::inspect(&run, &steps, &artifacts, ctx.colour));
    out(&format!(
        "artifacts: {}",
        dir.join("logs/loop").join(format!("run-{id}")).display()
    ));
    if let Some(target) = &run.merge_target_branch {
        out(&format!(
            "the work is on branch {target} in {}",
            dir.display()
        ));
    }
    if let Some(mut child) = daemon {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if !run.status.is_terminal() || run.status != loop_engine::domain::RunStatus::Completed {
        bail!("the demo run ended {}", run.status);
    }
    Ok(())
}
