//! loopd: the agent-loop daemon. Wiring only: configuration, tracing, backends, server.

use clap::Parser;

/// The agent-loop daemon: runs coding-agent loops in git worktrees behind a localhost API.
#[derive(Debug, Parser)]
#[command(name = "loopd", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LOOPD_LISTEN", default_value = "127.0.0.1:7700")]
    listen: String,
    /// Directory for the database, the artifact mirror and the token.
    #[arg(long, env = "LOOPD_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "loopd cannot serve {} yet: the control plane is not built in this version",
        args.listen
    )
}
