//! The one declaration of every config key (SPEC §8): name, type, default, what it accepts
//! (the validation) and its documentation. [`Config`], its `Default`, [`KEY_SPECS`] and
//! [`KEYS`] are generated from it; parsing, validation errors, `loopctl`'s flag help and
//! README's config table all read [`KEY_SPECS`]. Adding a key is one entry here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keys::{KeySpec, ValueKind};
use crate::backend::QueueOrder;
use crate::completion::CompletionMode;
use crate::domain::{MergeStrategy, NameSource, spelled_enum};

spelled_enum!(
    /// Which agent runs the steps of a run.
    ExecutorKind {
        /// The Claude Code CLI (`claude_bin`).
        Claude => "claude",
        /// The OpenAI Codex CLI (`codex_bin`).
        Codex => "codex",
        /// The Gemini CLI (`gemini_bin`).
        Gemini => "gemini",
        /// Any agent CLI, started from the `agent_cmd` template.
        Command => "command",
        /// The built-in simulated agent: works the plan without any model (demos, rehearsals).
        Simulate => "simulate",
    }
);

spelled_enum!(
    /// Where run artifacts are written.
    ArtifactMode {
        /// In the workspace's `log_dir`, copied under `global_log_dir` too.
        Mirror => "mirror",
        /// In the workspace's `log_dir` only.
        Workspace => "workspace",
    }
);

spelled_enum!(
    /// What happens to a run's worktree once its work is merged.
    WorktreeCleanup {
        /// Removed when the run is merged (by the run's own merge or by `loopctl merge`).
        OnMerge => "on_merge",
        /// Kept until scrapped or pruned (`loopctl worktrees --prune`).
        Never => "never",
    }
);

/// Longest accepted timeout (`*_timeout_sec`, `warn_iteration_sec`): 7 days.
pub const MAX_TIMEOUT_SEC: u64 = 7 * 24 * 3600;
/// Longest accepted pause or interval (backoffs, `heartbeat_sec`): 1 day.
pub const MAX_INTERVAL_SEC: u64 = 24 * 3600;

/// Generates [`Config`] (one field per key, with its doc), `Config::default()`, [`KEY_SPECS`]
/// and [`KEYS`] from one list of `key: Type = default, kind, "doc";` entries.
macro_rules! config_keys {
    ($( $key:ident : $ty:ty = $default:expr, $kind:expr, $doc:literal; )+) => {
        /// The effective configuration of a run (SPEC §8). Field names are the config keys;
        /// each field's doc is the key's description in [`KEY_SPECS`].
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Config {
            $(
                #[doc = $doc]
                pub $key: $ty,
            )+
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $key: $default, )+ }
            }
        }

        /// Every key, in the order of [`KEYS`] and of the fields of [`Config`].
        pub const KEY_SPECS: &[KeySpec] = &[
            $( KeySpec::new(stringify!($key), $kind, $doc), )+
        ];

        /// Every config key, in the order of the fields of [`Config`].
        pub const KEYS: &[&str] = &[ $( stringify!($key), )+ ];
    };
}

config_keys! {
    specs_dir: PathBuf = "specs".into(), ValueKind::Path,
        "Folder of spec files (and `LEARNINGS.md`), relative to the workspace root; must stay inside it.";
    plans_dir: PathBuf = "specs/planning".into(), ValueKind::Path,
        "Folder of plan files, relative to the workspace root; the default plan is `<plans_dir>/<spec stem>-plan.md`.";
    log_dir: PathBuf = "logs/loop".into(), ValueKind::Path,
        "Folder of run folders (`<log_dir>/run-<id>/`), relative to the workspace root; must resolve inside it.";
    model: String = "opus".into(), ValueKind::Text,
        "Model the agent CLI is asked to use.";
    iterations: u32 = 50, ValueKind::U32 { min: 1, max: u32::MAX },
        "Iteration budget of a run.";
    completion_mode: CompletionMode = CompletionMode::Trailing,
        ValueKind::Choice(&["exact", "trailing"]),
        "How `<promise>COMPLETE</promise>` is recognised: the whole output (`exact`) or its last line (`trailing`).";
    reviewer: bool = true, ValueKind::Bool,
        "Run reviewer passes over implemented tasks.";
    prompt_file: Option<PathBuf> = None, ValueKind::OptPath,
        "Custom implementation prompt (`SPEC_PATH`/`PLAN_PATH` substituted; a regular file of at most 1 MiB inside the workspace); `.loop/prompt.txt` is used when present.";
    context_files: Vec<PathBuf> = Vec::new(), ValueKind::PathList,
        "Extra files referenced with `@` in every implementation prompt (space-separated, inside the workspace).";
    verify_cmds: Vec<String> = Vec::new(), ValueKind::CmdList,
        "Verification commands, separated by `|`, run with `bash -lc` in the worktree.";
    verify_timeout_sec: u64 = 0, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Timeout of each verification command in seconds (0 = none).";
    claude_timeout_sec: u64 = 0, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Timeout of each agent step in seconds (0 = none; exit 124 on expiry).";
    claude_idle_timeout_sec: u64 = 0, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Stop an agent step that prints nothing for this many seconds (0 = never).";
    claude_retries: u32 = 0, ValueKind::U32 { min: 0, max: u32::MAX },
        "Extra attempts of an agent step that exits non-zero.";
    claude_retry_backoff_sec: u64 = 5, ValueKind::Secs { max: MAX_INTERVAL_SEC },
        "Seconds between those attempts.";
    claude_transient_retries: u32 = 4, ValueKind::U32 { min: 0, max: u32::MAX },
        "Extra attempts after a transient API failure (429/529/5xx/connection), with exponential backoff and jitter.";
    claude_transient_backoff_max_sec: u64 = 300, ValueKind::Secs { max: MAX_INTERVAL_SEC },
        "Cap of the transient-failure backoff in seconds.";
    claude_max_retries: Option<u32> = None, ValueKind::OptU32 { min: 0 },
        "Passed to the agent CLI as `CLAUDE_CODE_MAX_RETRIES` when set.";
    claude_bin: String = "claude".into(), ValueKind::Text,
        "The Claude Code executable.";
    codex_bin: String = "codex".into(), ValueKind::Text,
        "The OpenAI Codex CLI executable (`executor=codex`).";
    codex_model: Option<String> = None, ValueKind::OptText,
        "Model for `executor=codex` (`-m`; unset = the Codex CLI's own default; `model` is for Claude).";
    codex_args: Option<String> = None, ValueKind::OptText,
        "Extra arguments for `codex exec` (split like a shell would), e.g. `-c model_reasoning_effort=\"low\"`.";
    gemini_bin: String = "gemini".into(), ValueKind::Text,
        "The Gemini CLI executable (`executor=gemini`).";
    gemini_model: Option<String> = None, ValueKind::OptText,
        "Model for `executor=gemini` (`-m`; unset = the Gemini CLI's own default; `model` is for Claude).";
    gemini_args: Option<String> = None, ValueKind::OptText,
        "Extra arguments for `gemini` (split like a shell would), e.g. `--sandbox`.";
    executor: ExecutorKind = ExecutorKind::Claude,
        ValueKind::Choice(&["claude", "codex", "gemini", "command", "simulate"]),
        "Which agent runs the steps: the Claude CLI, the Codex CLI, the Gemini CLI, the `agent_cmd` template, or the built-in simulation (no model).";
    agent_cmd: Option<String> = None, ValueKind::OptText,
        "Command template for `executor=command` (required then), e.g. `codex exec --full-auto {prompt}` (`{prompt}`, `{prompt_file}`, `{model}`, `{workdir}`; no placeholder = prompt on stdin).";
    agent_env: Option<String> = None, ValueKind::OptText,
        "What agents and verification commands get on top of the allow-listed environment (`PATH`, `HOME`, `USER`, `LANG`/`LC_*`, `TERM`, `TMPDIR`, `SHELL`, `ANTHROPIC_*`, `CLAUDE_*`, `OPENAI_*`, `CODEX_*`, `GEMINI_*`, `GOOGLE_API_KEY`, `GOOGLE_GEMINI_BASE_URL`, `IS_SANDBOX`, the git identity, proxies): space-separated `NAME`s passed through from loopd's environment and `NAME=value` pairs, e.g. `OPENAI_API_KEY MODE=fast`; `LOOPD_*` is refused.";
    agent_memory_max: Option<String> = None, ValueKind::OptText,
        "Memory limit of each agent invocation's cgroup (bytes, or with `K`/`M`/`G`, e.g. `2G`); the step fails with reason `agent_memory_max` when the agent is killed for it. Needs a memory controller: refused at run creation where there is none.";
    agent_pids_max: Option<u32> = None, ValueKind::OptU32 { min: 1 },
        "Most processes (and threads) alive at once in each agent invocation's cgroup; a fork loop then fails the step with reason `agent_pids_max` instead of exhausting the host. Needs a pids controller: refused at run creation where there is none.";
    agent_cpu_max: Option<String> = None, ValueKind::OptText,
        "CPU limit of each agent invocation's cgroup, in CPUs (e.g. `1.5`). Needs the cgroup v2 cpu controller: refused at run creation where there is none.";
    artifact_mode: ArtifactMode = ArtifactMode::Mirror,
        ValueKind::Choice(&["mirror", "workspace"]),
        "Also copy run folders under `global_log_dir` (`mirror`) or keep them in the workspace only (`workspace`).";
    global_log_dir: PathBuf = "~/.local/share/loopd".into(), ValueKind::Path,
        "Machine-wide artifact folder, the mirror root (a leading `~` is `$HOME`).";
    run_naming_mode: NameSource = NameSource::Haiku,
        ValueKind::Choice(&["haiku", "spec_slug"]),
        "Name runs with the naming model (`haiku`) or from the spec (`spec_slug`).";
    run_naming_model: String = "haiku".into(), ValueKind::Text,
        "Model used to name runs.";
    base_branch: Option<String> = None, ValueKind::OptBranch,
        "Branch runs start from (unset: the detected default branch, else `main`).";
    run_branch_prefix: String = "run/".into(), ValueKind::BranchPrefix,
        "Prefix of every run branch: run branch = prefix + name slug (`-2`, `-3` when taken).";
    merge_target_branch: Option<String> = None, ValueKind::OptBranch,
        "Branch finished work is merged into (unset: `agent/<spec slug>`).";
    merge_strategy: MergeStrategy = MergeStrategy::Squash,
        ValueKind::Choice(&["squash", "merge", "none"]),
        "How finished work reaches the merge target.";
    worktree_path_template: String = "../{{ repo }}.{{ run_branch | sanitize }}".into(),
        ValueKind::Text,
        "Where run worktrees go (`{{ repo }}`, `{{ run_branch }}`, `| sanitize`), relative to the workspace root; must resolve inside the workspace's parent folder.";
    worktree_cleanup: WorktreeCleanup = WorktreeCleanup::Never,
        ValueKind::Choice(&["on_merge", "never"]),
        "Remove a run's worktree once its work is merged, by the run's own merge or by `loopctl merge` (`on_merge`), or keep it until `loopctl scrap` or `loopctl worktrees --prune` (`never`).";
    max_concurrency: u32 = 3, ValueKind::U32 { min: 1, max: u32::MAX },
        "Runs executing at once before this one may start.";
    max_runs_per_workspace: Option<u32> = None, ValueKind::OptU32 { min: 1 },
        "Runs of one workspace executing at once (unset = no cap).";
    queue_policy: QueueOrder = QueueOrder::Fifo,
        ValueKind::Choice(&["fifo", "newest_first"]),
        "Order in which pending runs are started.";
    max_consecutive_verification_failures: u32 = 3, ValueKind::U32 { min: 0, max: u32::MAX },
        "Fail a run after this many verification failures in a row (0 = never).";
    watchdog_max_rewrites: u32 = 2, ValueKind::U32 { min: 0, max: u32::MAX },
        "Prompt rewrites per run at most.";
    watchdog_no_progress_steps: u32 = 3, ValueKind::U32 { min: 0, max: u32::MAX },
        "Steps without a commit or plan change that raise `no_progress`.";
    watchdog_repeat_task_steps: u32 = 3, ValueKind::U32 { min: 0, max: u32::MAX },
        "Steps on the same task that raise `repeated_task`.";
    max_no_progress_steps: u32 = 3, ValueKind::U32 { min: 0, max: u32::MAX },
        "Fail a run (`no_progress`) after this many implementation steps that changed neither the plan nor HEAD, once the watchdog's rewrites are used up (0 = never).";
    max_cost_usd: Option<f64> = None, ValueKind::OptUsd,
        "Cost budget of a run in US dollars, summed from the agent's own accounting (retries and the naming call count); checked before and after every step, reached = FAILED `budget_exhausted:cost`.";
    max_tokens: Option<u64> = None, ValueKind::OptU64,
        "Token budget of a run (input + output tokens of every agent call); reached = FAILED `budget_exhausted:tokens`.";
    max_wall_sec: u64 = 0, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Wall-clock budget of a run in seconds from its first start (0 = none); reached = FAILED `budget_exhausted:wall`.";
    usage_limit_wait_max_sec: u64 = 21600, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Longest wait for an account usage limit to reset (event `USAGE_LIMIT_WAIT`); a reset further away fails the run (0 = never wait).";
    setup_cmds: Vec<String> = Vec::new(), ValueKind::CmdList,
        "Commands run once in a new worktree before the first agent call (install dependencies, copy an `.env`), separated by `|`, with `bash -lc`; a failure ends the run FAILED `setup_failed`.";
    setup_timeout_sec: u64 = 1800, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Timeout of each setup command in seconds (0 = none).";
    summary_json: bool = true, ValueKind::Bool,
        "Seed key: write `summary.json` at every run end. Accepted for compatibility with the seed's config files; summary.json is always written (SPEC §7).";
    max_review_passes: u32 = 10, ValueKind::U32 { min: 0, max: u32::MAX },
        "Reviewer steps per iteration at most.";
    heartbeat_sec: u64 = 300, ValueKind::Secs { max: MAX_INTERVAL_SEC },
        "Seconds between heartbeat events of a running step.";
    warn_iteration_sec: u64 = 300, ValueKind::Secs { max: MAX_TIMEOUT_SEC },
        "Warn when a step runs longer than this many seconds.";
    warn_output_bytes: u64 = 200_000, ValueKind::U64,
        "Warn when a step prints more than this many bytes.";
    postmortem: bool = true, ValueKind::Bool,
        "After a run completes or fails (and after its merge), write `<run folder>/analysis/`: a git snapshot of the worktree and three reports (`spec-compliance`, `run-quality`, `summary`) by the run's executor with read-only tools, each call bounded by the step timeouts (10 min when unset); best effort, it never changes the run's outcome. `loopctl analyze` runs it by hand.";
    notify_webhook_url: Option<String> = None, ValueKind::OptText,
        "POST a JSON notification to this `http://host[:port]/path` URL when the run completes, fails or is canceled, waits for a usage limit, exhausts its budget or gets a review action (queued, retried with backoff, never blocking the run).";
    notify_webhook_secret: Option<String> = None, ValueKind::OptText,
        "Signs each webhook body with HMAC-SHA256 in the header `X-Loop-Signature: sha256=<hex>`; `env:NAME` reads the secret from loopd's environment variable `NAME` at send time (a literal is stored with the run's config).";
    notify_cmd: Option<String> = None, ValueKind::OptText,
        "Shell command (`sh -c`, in the workspace) that gets each notification's JSON on stdin, with `LOOP_NOTIFY_KIND` and `LOOP_NOTIFY_RUN_ID` set; 30 s at most per call.";
    notify_desktop: bool = false, ValueKind::Bool,
        "Show each notification on the desktop with `notify-send` when it is on `PATH`.";
}

/// The spec of `key`, if it is a config key.
pub fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEY_SPECS.iter().find(|s| s.key == key)
}

/// The default of `key` as README and `--help` show it: the default configuration's value
/// (lists joined like a file value); empty for keys that are unset by default.
pub fn default_text(key: &str) -> String {
    let json = Config::default().to_json();
    match json.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The help of the `loopctl` flag that sets `key`: its description, what it accepts and its
/// default. Unknown keys give an empty text (a test keeps loopctl's keys known).
pub fn flag_help(key: &str) -> String {
    let Some(spec) = key_spec(key) else {
        return String::new();
    };
    let default = default_text(key);
    let default = if default.is_empty() {
        String::new()
    } else {
        format!("; default {default}")
    };
    format!(
        "{} [config key `{key}`: {}{default}]",
        spec.description,
        spec.accepts()
    )
}

/// README's configuration table, generated from [`KEY_SPECS`]: one row per key with its
/// default, what it accepts and its description. A test keeps README.md equal to it.
pub fn markdown_table() -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let mut out =
        String::from("| key | default | accepts | meaning |\n| --- | --- | --- | --- |\n");
    for spec in KEY_SPECS {
        let default = default_text(spec.key);
        let default = if default.is_empty() {
            String::new()
        } else {
            format!("`{}`", cell(&default))
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} | {} |\n",
            spec.key,
            cell(&spec.accepts()),
            cell(spec.description),
        ));
    }
    out
}
