//! `scripted-model`: runs the scripted Messages API server so a loop can be rehearsed offline
//! with the real Claude Code CLI. Default script: name runs "scripted widget run", then act on
//! the plan forever ([`scripted_model::Turn::PlanAgent`]).
//!
//! With `--wrapper FILE --claude BIN` it also writes a script that runs that CLI against this
//! server and nothing else (what `loopctl demo` uses as `claude_bin`), before it prints its
//! first line, `scripted model listening on <url>`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use scripted_model::cli::Wrapper;
use scripted_model::{ModelServer, Script};

/// A scripted Anthropic Messages API server for the Claude Code CLI.
#[derive(Debug, Parser)]
#[command(name = "scripted-model", version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A JSON script (`{"rules": [...], "turns": [...], "fallback": ...}`); default: the plan
    /// agent forever.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Write a script that runs `--claude` against this server (and nothing else) here.
    #[arg(long, value_name = "FILE", requires = "claude")]
    wrapper: Option<PathBuf>,
    /// The Claude CLI the `--wrapper` script runs.
    #[arg(long, value_name = "BIN", requires = "wrapper")]
    claude: Option<PathBuf>,
    /// An `export KEY=VALUE` line for the `--wrapper` script (repeatable).
    #[arg(long = "export", value_name = "KEY=VALUE", value_parser = key_value, requires = "wrapper")]
    exports: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Script> {
    let Some(path) = path else {
        return Ok(Script::plan_agent());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the script {}", path.display()))?;
    Script::from_json(&text).with_context(|| format!("invalid script {}", path.display()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let script = load(args.script.as_ref())?;
    let server = ModelServer::start_on(args.listen, script)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = server.base_url();
    if let (Some(path), Some(claude)) = (&args.wrapper, &args.claude) {
        Wrapper {
            claude: claude.clone(),
            base_url: url.clone(),
            exports: args.exports.clone(),
            ..Wrapper::default()
        }
        .write(path)
        .with_context(|| format!("cannot write the wrapper {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "scripted model listening on {url}")?;
    writeln!(
        out,
        "point the Claude CLI at it:\n  export ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=test \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 IS_SANDBOX=1\n  \
         claude -p --dangerously-skip-permissions --output-format stream-json --verbose '<prompt>'"
    )?;
    writeln!(out, "press Ctrl-C to stop")?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    let served = server.messages_requests().len();
    server.shutdown().await;
    writeln!(std::io::stdout(), "stopped after {served} model requests")?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scripted-model: cannot start tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scripted-model: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_script_loading() {
        let args = Args::try_parse_from(["scripted-model", "--listen", "127.0.0.1:9999"]).unwrap();
        assert_eq!(args.listen.port(), 9999);
        assert!(args.script.is_none());
        assert!(args.wrapper.is_none());
        let args = Args::try_parse_from([
            "scripted-model",
            "--wrapper",
            "/w.sh",
            "--claude",
            "/bin/claude",
            "--export",
            "A=b=c",
        ])
        .unwrap();
        assert_eq!(args.exports, [("A".to_owned(), "b=c".to_owned())]);
        assert!(Args::try_parse_from(["scripted-model", "--wrapper", "/w.sh"]).is_err());
        assert!(Args::try_parse_from(["scripted-model", "--export", "A=b"]).is_err());
        assert_eq!(load(None).unwrap(), Script::plan_agent());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, r#"{"turns": ["stall"], "fallback": {"text": "hi"}}"#).unwrap();
        let script = load(Some(&path)).unwrap();
        assert_eq!(script.turns.len(), 1);
        std::fs::write(&path, "{").unwrap();
        let err = format!("{:#}", load(Some(&path)).unwrap_err());
        assert!(err.contains("invalid script"), "{err}");
        let missing = format!(
            "{:#}",
            load(Some(&dir.path().join("nope.json"))).unwrap_err()
        );
        assert!(missing.contains("cannot read the script"), "{missing}");
    }
}
