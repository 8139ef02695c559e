//! One module per subcommand; `dispatch` routes the parsed command line to them.

mod control;
mod demo;
mod inspect;
mod logs;
mod run;
mod tail;

use std::time::Duration;

use anyhow::Context;
use loop_engine::domain::RunId;
use loop_http::Client;

use crate::cli::{Cli, Command};
use crate::exit;

/// How long the readiness probe waits for the daemon.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a command needs: the client and the output mode.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) json: bool,
    pub(crate) colour: bool,
}

/// Prints a line to stdout (commands are the only place that prints).
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
}

/// Prints JSON (pretty) to stdout.
pub(crate) fn out_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(value).context("cannot render JSON")?);
    Ok(())
}

/// `--token`, else `$LOOPD_TOKEN`, else the token file of the data dir.
pub(crate) fn token(flag: Option<String>) -> Option<String> {
    loop_http::auth::client_token(flag)
}

pub(crate) fn parse_id(text: &str) -> anyhow::Result<RunId> {
    text.parse::<RunId>().map_err(|_| {
        anyhow::Error::new(exit::Verdict {
            code: exit::USAGE,
            message: format!(
                "`{text}` is not a run id (a UUID, as printed by `loopctl run` or `loopctl list`)"
            ),
        })
    })
}

async fn connect(cli: &Cli) -> anyhow::Result<Ctx> {
    let client = Client::new(&cli.addr, token(cli.token.clone()))?;
    client.wait_ready(READY_TIMEOUT).await?;
    Ok(Ctx {
        client,
        json: cli.json,
        colour: crate::render::colour(),
    })
}

/// Runs the command.
pub(crate) async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Completions(a) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "loopctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Demo(a) => demo::demo(&cli, a).await,
        command => {
            let ctx = connect(&cli).await?;
            match command {
                Command::Run(a) => run::run(&ctx, a).await,
                Command::Prompt(a) => run::prompt(&ctx, a).await,
                Command::List(a) => inspect::list(&ctx, a).await,
                Command::Inspect(a) => inspect::inspect(&ctx, &a.id).await,
                Command::Pause(a) => control::pause(&ctx, &a.id).await,
                Command::Resume(a) => control::resume(&ctx, &a.id).await,
                Command::Cancel(a) => control::cancel(&ctx, &a.id).await,
                Command::Wait(a) => control::wait(&ctx, &a.id).await,
                Command::Tail(a) => tail::tail(&ctx, &a.id, a.raw).await,
                Command::Logs(a) => logs::logs(&ctx, a).await,
                Command::Completions(_) | Command::Demo(_) => Ok(()),
            }
        }
    }
}
