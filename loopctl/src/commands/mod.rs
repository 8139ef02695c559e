//! One module per subcommand; `dispatch` routes the parsed command line to them.

mod analyze;
mod control;
mod demo;
mod inspect;
mod logs;
mod review;
mod run;
mod tail;

use std::time::Duration;

use anyhow::Context;
use loop_engine::domain::RunId;
use loop_http::Client;
use loop_http::api::{ListQuery, RunResource};

use crate::cli::{Cli, Command};
use crate::exit;

/// How long the readiness probe waits for the daemon.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a command needs: the client and the output mode.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) json: bool,
    pub(crate) colour: bool,
    /// How costs are shown (labelled as not billed in the demo).
    pub(crate) costs: crate::render::Costs,
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

/// How many of the newest runs a prefix, a name or `last` is looked up among.
const RESOLVE_AMONG: u32 = 1000;

/// The run `text` names: a full id, a unique prefix of an id (as git takes commit
/// prefixes), a run name, or `last` (the newest run). An ambiguous prefix or name is a usage
/// error (64) listing the candidates; nothing matching is "not found" (66).
pub(crate) async fn resolve_id(ctx: &Ctx, text: &str) -> anyhow::Result<RunId> {
    let text = text.trim();
    if let Ok(id) = text.parse::<RunId>() {
        return Ok(id);
    }
    if text.is_empty() {
        return Err(verdict(exit::USAGE, "an empty run id".into()));
    }
    let runs = ctx
        .client
        .list_runs(&ListQuery {
            limit: Some(RESOLVE_AMONG),
            ..ListQuery::default()
        })
        .await?;
    match pick(&runs, text) {
        Pick::One(id) => Ok(id),
        Pick::None => Err(verdict(
            exit::NOT_FOUND,
            format!(
                "no run matches `{text}` (give a run id, a unique prefix of one, a run name, or `last`; `loopctl list` shows them)"
            ),
        )),
        Pick::Many(candidates) => {
            let lines: Vec<String> = candidates
                .iter()
                .map(|r| format!("  {}  {}  {}", r.id, r.name, r.status))
                .collect();
            Err(verdict(
                exit::USAGE,
                format!(
                    "`{text}` is ambiguous: it matches {} runs; give more of the id:\n{}",
                    candidates.len(),
                    lines.join("\n")
                ),
            ))
        }
    }
}

/// What a run reference matched.
#[derive(Debug)]
pub(crate) enum Pick<'a> {
    One(RunId),
    None,
    Many(Vec<&'a RunResource>),
}

/// Matches `text` against `runs` (newest first): `last`, then id prefixes (case-insensitive),
/// then names. A prefix that matches one run wins over names.
pub(crate) fn pick<'a>(runs: &'a [RunResource], text: &str) -> Pick<'a> {
    if text.eq_ignore_ascii_case("last") {
        return runs.first().map_or(Pick::None, |r| Pick::One(r.id));
    }
    let lower = text.to_ascii_lowercase();
    let by_prefix: Vec<&RunResource> = runs
        .iter()
        .filter(|r| r.id.to_string().starts_with(&lower))
        .collect();
    let chosen = if by_prefix.is_empty() {
        runs.iter().filter(|r| r.name == text).collect()
    } else {
        by_prefix
    };
    match chosen.as_slice() {
        [] => Pick::None,
        [one] => Pick::One(one.id),
        _ => Pick::Many(chosen),
    }
}

pub(crate) fn verdict(code: i32, message: String) -> anyhow::Error {
    anyhow::Error::new(exit::Verdict { code, message })
}

async fn connect(cli: &Cli) -> anyhow::Result<Ctx> {
    let client = Client::new(&cli.addr, token(cli.token.clone()))?;
    // Say at once what is being waited for when the daemon does not answer the first probe;
    // the backoff then goes on as before.
    if client.health().await.is_err() {
        waiting_notice(&cli.addr);
        client.wait_ready(READY_TIMEOUT).await?;
    }
    Ok(Ctx {
        client,
        json: cli.json,
        colour: crate::render::colour(),
        costs: crate::render::Costs::Reported,
    })
}

fn waiting_notice(addr: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "loopctl: waiting for loopd at {addr} (up to {} s; start it with `loopd` or `cargo run -p loopd`) ...",
        READY_TIMEOUT.as_secs()
    );
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
                Command::Diff(a) => review::diff(&ctx, a).await,
                Command::Merge(a) => review::merge(&ctx, a).await,
                Command::Scrap(a) => review::scrap(&ctx, &a.id).await,
                Command::Pr(a) => review::pr(&ctx, a).await,
                Command::Retry(a) => review::retry(&ctx, &a.id).await,
                Command::Worktrees(a) => review::worktrees(&ctx, a).await,
                Command::Analyze(a) => analyze::analyze(&ctx, a).await,
                Command::Completions(_) | Command::Demo(_) => Ok(()),
            }
        }
    }
}
