//! The command line: clap structs only. Validation into requests happens in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Command-line client for loopd, the agent-loop daemon.
#[derive(Debug, Parser)]
#[command(name = "loopctl", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Daemon address.
    #[arg(
        long,
        global = true,
        env = "LOOPD_ADDR",
        default_value = "http://127.0.0.1:7700"
    )]
    pub(crate) addr: String,
    /// API token [default: $LOOPD_TOKEN, else the token file in $LOOPD_DATA_DIR or the
    /// default data dir].
    #[arg(long, global = true)]
    pub(crate) token: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a run of a spec and its plan.
    Run(RunArgs),
    /// List runs (newest first).
    List(ListArgs),
    /// Show a run's state, last step and artifact paths.
    Inspect(IdArg),
    /// Pause a run at its next step boundary.
    Pause(IdArg),
    /// Resume a paused run.
    Resume(IdArg),
    /// Cancel a run (stops its agent).
    Cancel(IdArg),
    /// Follow a run's live agent output with a status line.
    Tail(TailArgs),
    /// Wait until a run ends (exit 0 completed, 1 failed, 2 canceled).
    Wait(IdArg),
    /// Print a stored agent step log.
    Logs(LogsArgs),
    /// Print the prompt a run would get, without running anything.
    Prompt(RunArgs),
    /// Create a sample project and run it through the daemon, showing live progress: the real
    /// Claude CLI against a local scripted model when the CLI is installed, else a simulation.
    Demo(DemoArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
}

/// The inputs of a run (shared by `run` and `prompt`).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The spec (as given, relative to the workspace, or under specs_dir).
    pub(crate) spec: PathBuf,
    /// The plan (default: `<plans_dir>/<spec stem>-plan.md`).
    pub(crate) plan: Option<PathBuf>,
    /// A key=value config file [default: $LOOP_CONFIG].
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Run name (ASCII, at most 64 characters).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// How to name the run: haiku or spec_slug.
    #[arg(long)]
    pub(crate) name_source: Option<String>,
    /// Model used for haiku naming.
    #[arg(long)]
    pub(crate) name_model: Option<String>,
    /// Branch the run starts from.
    #[arg(long)]
    pub(crate) base_branch: Option<String>,
    /// Prefix of the run branch.
    #[arg(long)]
    pub(crate) run_branch_prefix: Option<String>,
    /// Branch the finished work is merged into.
    #[arg(long)]
    pub(crate) merge_target: Option<String>,
    /// squash, merge or none.
    #[arg(long)]
    pub(crate) merge_strategy: Option<String>,
    /// Worktree path template.
    #[arg(long)]
    pub(crate) worktree_path_template: Option<String>,
    /// Runs executing at once before this one may start.
    #[arg(long)]
    pub(crate) max_concurrency: Option<u32>,
    /// Runs of this workspace executing at once before this one may start.
    #[arg(long)]
    pub(crate) max_runs_per_workspace: Option<u32>,
    /// fifo or newest_first.
    #[arg(long)]
    pub(crate) queue_policy: Option<String>,
    /// Any other config key, as key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// The workspace [default: the git root of the current directory].
    #[arg(long)]
    pub(crate) workspace: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only runs in this status (PENDING, RUNNING, PAUSED, COMPLETED, FAILED, CANCELED);
    /// comma-separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) status: Vec<String>,
    /// Only runs of this workspace.
    #[arg(long)]
    pub(crate) workspace: Option<PathBuf>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct IdArg {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
    /// Print the agent's output as it is (no stream-json rendering).
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
    /// The step number (see `inspect`) [default: the last agent step].
    #[arg(long)]
    pub(crate) step: Option<u32>,
    /// Print the stored stream-json as it is (default: rendered like `tail`).
    #[arg(long)]
    pub(crate) raw: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where to create the sample project (default: a new temp folder).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Use the built-in simulated agent even when the Claude CLI is installed.
    #[arg(long)]
    pub(crate) simulate: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub(crate) shell: clap_complete::Shell,
}
