//! loopctl: the agent-loop command-line client. Wiring only: parse, call the client, render.

use clap::Parser;

/// Command-line client for loopd.
#[derive(Debug, Parser)]
#[command(name = "loopctl", version, about)]
struct Args {
    /// Daemon address.
    #[arg(long, env = "LOOPD_ADDR", default_value = "http://127.0.0.1:7700")]
    addr: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "loopctl cannot reach {} yet: the control plane is not built in this version",
        args.addr
    )
}
