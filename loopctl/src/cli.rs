//! The command line: clap structs only. Validation into requests happens in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use loop_engine::config::flag_help;

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
    /// Show what a run changed: its commits and a patch per file (--stat: one line per file).
    Diff(DiffArgs),
    /// Merge a finished run's branch into its merge target (at most once; a conflict changes
    /// nothing).
    Merge(MergeArgs),
    /// Throw a finished run's work away: remove its worktree and delete its branch.
    Scrap(IdArg),
    /// Open a pull request for a finished run's branch with the GitHub CLI (`gh`).
    Pr(PrArgs),
    /// Start a failed or canceled run again from its last step, with a fresh iteration budget.
    Retry(IdArg),
    /// List the runs' worktrees (path, branch, status, size, on disk or gone); --prune removes
    /// those of ended, reviewed runs.
    Worktrees(WorktreesArgs),
    /// Print the prompt a run would get, without running anything.
    Prompt(RunArgs),
    /// Write a run's postmortem (git snapshot, spec-compliance, run-quality and summary
    /// reports) into its run folder's `analysis/`, and show the summary.
    Analyze(AnalyzeArgs),
    /// Create a sample project and run it through the daemon, showing live progress: the real
    /// Claude CLI against a local scripted model when the CLI is installed, else a simulation.
    Demo(DemoArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
}

/// The inputs of a run (shared by `run` and `prompt`). The help of a flag that sets a config
/// key is that key's declaration (`loop_engine::config::flag_help`).
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
    #[arg(long, help = flag_help("run_naming_mode"))]
    pub(crate) name_source: Option<String>,
    #[arg(long, help = flag_help("run_naming_model"))]
    pub(crate) name_model: Option<String>,
    #[arg(long, help = flag_help("base_branch"))]
    pub(crate) base_branch: Option<String>,
    #[arg(long, help = flag_help("run_branch_prefix"))]
    pub(crate) run_branch_prefix: Option<String>,
    #[arg(long, help = flag_help("merge_target_branch"))]
    pub(crate) merge_target: Option<String>,
    #[arg(long, help = flag_help("merge_strategy"))]
    pub(crate) merge_strategy: Option<String>,
    #[arg(long, help = flag_help("worktree_path_template"))]
    pub(crate) worktree_path_template: Option<String>,
    #[arg(long, help = flag_help("max_concurrency"))]
    pub(crate) max_concurrency: Option<u32>,
    #[arg(long, help = flag_help("max_runs_per_workspace"))]
    pub(crate) max_runs_per_workspace: Option<u32>,
    #[arg(long, help = flag_help("queue_policy"))]
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
pub(crate) struct DiffArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
    /// One line per file instead of the patches.
    #[arg(long)]
    pub(crate) stat: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
    /// `squash` or `merge` [default: the run's merge_strategy, `squash` when that is `none`].
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// The branch to merge into [default: the run's merge target, else its base branch].
    #[arg(long)]
    pub(crate) target: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PrArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    pub(crate) id: String,
    /// The title (default: `loop: <name> (<done> of <total> tasks)`).
    #[arg(long)]
    pub(crate) title: Option<String>,
    /// The body (default: tasks, iterations, cost and verification of the run).
    #[arg(long)]
    pub(crate) body: Option<String>,
    /// Read the body from this file.
    #[arg(long)]
    pub(crate) body_file: Option<PathBuf>,
    /// Open it as a draft.
    #[arg(long)]
    pub(crate) draft: bool,
    /// The branch it merges into [default: the run's base branch].
    #[arg(long)]
    pub(crate) base: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WorktreesArgs {
    /// Remove the worktrees of ended runs that were merged, scrapped or sent as a pull request.
    #[arg(long)]
    pub(crate) prune: bool,
    /// Only runs of this workspace [default: every workspace].
    #[arg(long)]
    pub(crate) workspace: Option<PathBuf>,
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
pub(crate) struct AnalyzeArgs {
    /// The run: its id, a unique prefix of the id, its name, or `last`.
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub(crate) id: Option<String>,
    /// Analyse the newest run that has ended.
    #[arg(long)]
    pub(crate) latest: bool,
    /// The model the analyses ask for [default: the run's `model`].
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Write the git snapshot and the three prompts only; run no agent.
    #[arg(long)]
    pub(crate) prompt_only: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where to create the sample project (default: a new temp folder).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Use the built-in simulated agent even when the Claude CLI is installed.
    #[arg(long, conflicts_with = "agent")]
    pub(crate) simulate: bool,
    /// The agent CLI to run against the scripted model: `claude` (simulated when it is not
    /// installed), `codex` or `gemini` (required to be installed: CODEX_BIN / GEMINI_BIN, on
    /// PATH, or bin/install-codex / bin/install-gemini).
    #[arg(long, value_enum)]
    pub(crate) agent: Option<DemoAgent>,
}

/// The agent CLI of `loopctl demo --agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DemoAgent {
    /// The Claude Code CLI.
    Claude,
    /// The OpenAI Codex CLI.
    Codex,
    /// The Gemini CLI.
    Gemini,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub(crate) shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The `run`/`prompt` flags that set a config key: (flag, key).
    const CONFIG_FLAGS: &[(&str, &str)] = &[
        ("name-source", "run_naming_mode"),
        ("name-model", "run_naming_model"),
        ("base-branch", "base_branch"),
        ("run-branch-prefix", "run_branch_prefix"),
        ("merge-target", "merge_target_branch"),
        ("merge-strategy", "merge_strategy"),
        ("worktree-path-template", "worktree_path_template"),
        ("max-concurrency", "max_concurrency"),
        ("max-runs-per-workspace", "max_runs_per_workspace"),
        ("queue-policy", "queue_policy"),
    ];

    /// Every flag that sets a config key is documented by that key's declaration.
    #[test]
    fn config_flags_take_their_help_from_the_key_declarations() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        for (flag, key) in CONFIG_FLAGS {
            assert!(loop_engine::config::key_spec(key).is_some(), "{key}");
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("--{flag} missing"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert_eq!(help, flag_help(key), "--{flag}");
            assert!(help.contains(key), "{help}");
        }
    }
}
