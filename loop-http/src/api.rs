//! Wire types: the only serde types that cross the network. The server converts engine values
//! into these, the client parses them back; nothing else in the workspace knows the JSON shape
//! of the control plane.
//!
//! Times are sent twice: as RFC 3339 UTC strings for people and as `*_ms` integers (milliseconds
//! since the Unix epoch) for programs.

use std::path::PathBuf;

use loop_engine::domain::{
    AgentResources, AgentUsage, Artifact, Event, MergeStrategy, NameSource, ReviewStatus, Run,
    RunId, RunStatus, Step, StepId, UnixMs,
};
use loop_engine::engine::CreateRun;
use serde::{Deserialize, Serialize};

/// Body of `POST /runs` and `POST /prompt`. Unknown fields are refused so a typo is an error,
/// not a silently ignored option.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// The spec, absolute or relative to `cwd` / the workspace.
    pub spec_path: PathBuf,
    /// The plan (default: derived from the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_path: Option<PathBuf>,
    /// The workspace (git root), absolute.
    pub workspace_root: PathBuf,
    /// Config overrides, `key: value` (string, number, boolean, array or `null`, as the engine's
    /// JSON override layer accepts them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_override: Option<serde_json::Map<String, serde_json::Value>>,
    /// An extra config file (`--config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// The directory relative paths were typed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// An explicit run name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How to name the run (`spec_slug` or `haiku`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_source: Option<NameSource>,
    /// The merge target branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_target_branch: Option<String>,
    /// The merge strategy (`squash`, `merge` or `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_strategy: Option<MergeStrategy>,
}

impl CreateRunRequest {
    /// The engine's request for these fields.
    pub fn to_engine(&self) -> CreateRun {
        CreateRun {
            workspace_root: self.workspace_root.clone(),
            cwd: self.cwd.clone(),
            spec_path: self.spec_path.clone(),
            plan_path: self.plan_path.clone(),
            config_file: self.config_file.clone(),
            json_overrides: self.config_override.clone().unwrap_or_default(),
            overrides: Vec::new(),
            name: self.name.clone(),
            name_source: self.name_source,
            merge_target_branch: self.merge_target_branch.clone(),
            merge_strategy: self.merge_strategy,
        }
    }
}

/// Query of `GET /runs`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListQuery {
    /// Only runs of this workspace.
    pub workspace_root: Option<PathBuf>,
    /// Only runs in one of these states (empty: all).
    pub statuses: Vec<RunStatus>,
    /// At most this many (server default 50, maximum 1000).
    pub limit: Option<u32>,
    /// Only runs created before this one (pagination).
    pub before: Option<RunId>,
}

/// Token usage of an agent step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageResource {
    /// Agent turns.
    pub turns: Option<u64>,
    /// Input tokens.
    pub input_tokens: Option<u64>,
    /// Output tokens.
    pub output_tokens: Option<u64>,
    /// Input tokens read from the cache.
    pub cache_read_input_tokens: Option<u64>,
    /// Input tokens written to the cache.
    pub cache_creation_input_tokens: Option<u64>,
    /// Cost in US dollars.
    pub cost_usd: Option<f64>,
    /// The agent reported an error.
    pub is_error: bool,
    /// Time spent in API calls.
    pub duration_api_ms: Option<u64>,
}

impl From<&AgentUsage> for UsageResource {
    fn from(u: &AgentUsage) -> Self {
        Self {
            turns: u.num_turns,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            cost_usd: u.cost_usd,
            is_error: u.is_error,
            duration_api_ms: u.duration_api_ms,
        }
    }
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepResource {
    /// Step id.
    pub id: StepId,
    /// Its run.
    pub run_id: RunId,
    /// 1-based order within the run (the `{seq}` of the log route).
    pub seq: u32,
    /// Iteration number.
    pub iteration: u32,
    /// Iteration label (`3`, `3R1`, ...).
    pub label: String,
    /// Phase (`implementation`, `verification`, ...).
    pub phase: String,
    /// Status (`SUCCEEDED`, ...).
    pub status: String,
    /// Attempt number.
    pub attempt: u32,
    /// Start time, RFC 3339.
    pub started_at: Option<String>,
    /// Start time, ms.
    pub started_at_ms: Option<UnixMs>,
    /// End time, RFC 3339.
    pub ended_at: Option<String>,
    /// End time, ms.
    pub ended_at_ms: Option<UnixMs>,
    /// `ended_at - started_at`.
    pub duration_ms: Option<i64>,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Failure reason.
    pub reason: Option<String>,
    /// Prompt file.
    pub prompt_path: Option<PathBuf>,
    /// Output log file.
    pub output_path: Option<PathBuf>,
    /// HEAD before.
    pub head_before: Option<String>,
    /// HEAD after.
    pub head_after: Option<String>,
    /// Usage from the agent's result line.
    pub usage: Option<UsageResource>,
    /// What the agent's processes used, from its cgroup: `cpu_usec`, `memory_peak_bytes`,
    /// `pids_peak`, `limit_hit` (absent without cgroups).
    #[serde(default)]
    pub resources: Option<AgentResources>,
}

impl From<&Step> for StepResource {
    fn from(s: &Step) -> Self {
        Self {
            id: s.id,
            run_id: s.run_id,
            seq: s.seq,
            iteration: s.iteration,
            label: s.label.clone(),
            phase: s.phase.to_string(),
            status: s.status.to_string(),
            attempt: s.attempt,
            started_at: s.started_at.map(rfc3339),
            started_at_ms: s.started_at,
            ended_at: s.ended_at.map(rfc3339),
            ended_at_ms: s.ended_at,
            duration_ms: s.started_at.zip(s.ended_at).map(|(a, b)| b - a),
            exit_code: s.exit_code,
            reason: s.reason.clone(),
            prompt_path: s.prompt_path.clone(),
            output_path: s.output_path.clone(),
            head_before: s.head_before.clone(),
            head_after: s.head_after.clone(),
            usage: s.usage.as_ref().map(UsageResource::from),
            resources: s.resources.clone(),
        }
    }
}

/// A run as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResource {
    /// Run id.
    pub id: RunId,
    /// Name.
    pub name: String,
    /// How it was named.
    pub name_source: String,
    /// Status (`PENDING`, `RUNNING`, ...).
    pub status: RunStatus,
    /// Why it ended.
    pub exit_reason: Option<String>,
    /// Failure detail.
    pub failure: Option<String>,
    /// Workspace.
    pub workspace_root: PathBuf,
    /// Spec.
    pub spec_path: PathBuf,
    /// Plan.
    pub plan_path: PathBuf,
    /// Base branch.
    pub base_branch: String,
    /// Run branch (empty until chosen).
    pub run_branch: String,
    /// Merge target.
    pub merge_target_branch: Option<String>,
    /// Merge strategy.
    pub merge_strategy: String,
    /// Worktree.
    pub worktree_path: PathBuf,
    /// Iterations started.
    pub iterations_run: u32,
    /// Tasks done.
    pub tasks_done: u32,
    /// Tasks in the plan.
    pub tasks_total: u32,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Creation time, ms.
    pub created_at_ms: UnixMs,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// Last change, ms.
    pub updated_at_ms: UnixMs,
    /// The worker holding the run, if any.
    pub worker_id: Option<String>,
    /// The last step, if any.
    pub last_step: Option<StepResource>,
    /// Spent and limit of each budget (SPEC §15); in the resource of one run
    /// (`GET /runs/{id}`), not in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<loop_engine::engine::BudgetStatus>,
    /// The effective configuration.
    pub config: serde_json::Value,
    /// Where the run is in a person's review: `pending`, `merged`, `scrapped`, `pr_created`.
    #[serde(default)]
    pub review_status: ReviewStatus,
    /// When the last review action (or the run's own merge) happened, RFC 3339.
    #[serde(default)]
    pub review_action_at: Option<String>,
    /// The same, ms.
    #[serde(default)]
    pub review_action_at_ms: Option<UnixMs>,
    /// The target's commit that holds the run's work, once merged.
    #[serde(default)]
    pub merge_commit: Option<String>,
    /// The pull request opened for the run branch.
    #[serde(default)]
    pub pr_url: Option<String>,
}

impl RunResource {
    /// The resource of `run` with its last step.
    pub fn new(run: &Run, last_step: Option<&Step>) -> Self {
        Self {
            id: run.id,
            name: run.name.clone(),
            name_source: run.name_source.to_string(),
            status: run.status,
            exit_reason: run.exit_reason.as_ref().map(ToString::to_string),
            failure: run.failure.clone(),
            workspace_root: run.workspace_root.clone(),
            spec_path: run.spec_path.clone(),
            plan_path: run.plan_path.clone(),
            base_branch: run.base_branch.clone(),
            run_branch: run.run_branch.clone(),
            merge_target_branch: run.merge_target_branch.clone(),
            merge_strategy: run.merge_strategy.to_string(),
            worktree_path: run.worktree_path.clone(),
            iterations_run: run.iterations_run,
            tasks_done: run.tasks_done,
            tasks_total: run.tasks_total,
            created_at: rfc3339(run.created_at),
            created_at_ms: run.created_at,
            updated_at: rfc3339(run.updated_at),
            updated_at_ms: run.updated_at,
            worker_id: run.worker_id.clone(),
            last_step: last_step.map(StepResource::from),
            budget: None,
            config: run.config.clone(),
            review_status: run.review_status,
            review_action_at: run.review_action_at.map(rfc3339),
            review_action_at_ms: run.review_action_at,
            merge_commit: run.merge_commit.clone(),
            pr_url: run.pr_url.clone(),
        }
    }
}

/// Answer of `POST /runs`: the run and the configuration warnings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedRunResponse {
    /// The new run.
    #[serde(flatten)]
    pub run: RunResource,
    /// Warnings (unknown config keys, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Answer of `GET /runs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    /// Runs, newest first.
    pub runs: Vec<RunResource>,
}

/// Answer of `GET /runs/{id}/steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepList {
    /// Steps in order.
    pub steps: Vec<StepResource>,
}

/// An artifact file of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactResource {
    /// Store id.
    pub id: i64,
    /// Kind (`run_log`, `report`, ...).
    pub kind: String,
    /// `workspace` or `global`.
    pub location: String,
    /// Absolute path.
    pub path: PathBuf,
    /// SHA-256, hex.
    pub checksum: String,
    /// When recorded, RFC 3339.
    pub recorded_at: String,
    /// When recorded, ms.
    pub recorded_at_ms: UnixMs,
}

impl From<&Artifact> for ArtifactResource {
    fn from(a: &Artifact) -> Self {
        Self {
            id: a.id,
            kind: a.kind.to_string(),
            location: a.location.to_string(),
            path: a.path.clone(),
            checksum: a.checksum.clone(),
            recorded_at: rfc3339(a.recorded_at),
            recorded_at_ms: a.recorded_at,
        }
    }
}

/// Answer of `GET /runs/{id}/artifacts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactList {
    /// Artifacts.
    pub artifacts: Vec<ArtifactResource>,
}

/// Body of `POST /runs/{id}/postmortem` (an empty body takes the defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostmortemRequest {
    /// The model the analyses ask for (default: the run's `model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Write the git snapshot and the prompts, run no agent.
    pub prompt_only: bool,
}

impl PostmortemRequest {
    /// The engine's options.
    pub fn to_engine(&self) -> loop_engine::engine::PostmortemOptions {
        loop_engine::engine::PostmortemOptions {
            model: self.model.clone(),
            prompt_only: self.prompt_only,
        }
    }
}

/// A file of a run's `analysis/` folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisFileResource {
    /// File name (`summary.md`, `git-diff.patch`, ...).
    pub name: String,
    /// Absolute path on the daemon's host.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
}

/// Answer of `GET /runs/{id}/postmortem` and `POST /runs/{id}/postmortem` (202, the
/// postmortem then under way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostmortemResource {
    /// The run.
    pub run_id: RunId,
    /// `<run folder>/analysis/`.
    pub dir: PathBuf,
    /// True while a postmortem of the run is under way.
    pub running: bool,
    /// The folder's files, by name.
    pub files: Vec<AnalysisFileResource>,
    /// The first non-blank lines of `summary.md`, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_head: Option<String>,
    /// How the last postmortem ended: `ok` or `failed` (absent before the first one ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// Its `POSTMORTEM_END` message (`status=... files=... reason=...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
}

impl From<loop_engine::engine::PostmortemListing> for PostmortemResource {
    fn from(l: loop_engine::engine::PostmortemListing) -> Self {
        Self {
            run_id: l.run_id,
            dir: l.dir,
            running: l.running,
            files: l
                .files
                .into_iter()
                .map(|f| AnalysisFileResource {
                    name: f.name,
                    path: f.path,
                    bytes: f.bytes,
                })
                .collect(),
            summary_head: l.summary_head,
            last_status: l.last_status.map(|s| {
                match s {
                    loop_engine::engine::PostmortemStatus::Ok => "ok",
                    loop_engine::engine::PostmortemStatus::Failed => "failed",
                }
                .to_owned()
            }),
            last_message: l.last_message,
        }
    }
}

/// Answer of `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `degraded` when the store check failed.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// The engine's worker id.
    pub worker_id: String,
    /// Runs executing now.
    pub running: usize,
    /// How agents are contained: `cgroup` (one cgroup per agent invocation) or
    /// `process-group` (process group plus a `/proc` search, where no cgroup can be made).
    #[serde(default)]
    pub containment: String,
    /// Writes of this worker that the store refused because another worker had taken their
    /// run over (fencing, SPEC §14), since it started.
    #[serde(default)]
    pub fenced_writes_rejected: u64,
    /// What is wrong, when degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Answer of `POST /prompt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptResponse {
    /// The implementation prompt.
    pub implementation: String,
    /// The reviewer prompt, when the reviewer is on.
    pub reviewer: Option<String>,
    /// Configuration warnings.
    pub warnings: Vec<String>,
    /// Which agent would run the steps, e.g. `codex (codex_bin codex, model gpt-5)`.
    #[serde(default)]
    pub agent: String,
}

/// The body of every error answer: `{"error": {"code": ..., "message": ...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable `snake_case` code (`not_found`, `invalid_config`, ...).
    pub code: String,
    /// Human-readable message naming what is wrong.
    pub message: String,
    /// The conflicting paths of a refused merge (`merge_conflict`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Body of `POST /runs/{id}/merge` (all optional; an empty body is `{}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequestBody {
    /// `squash` or `merge` (default: the run's `merge_strategy`; `squash` when that is `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<MergeStrategy>,
    /// The branch to merge into (default: the run's `merge_target_branch`, else `base_branch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Body of `POST /runs/{id}/create-pr` (all optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePrRequestBody {
    /// The title (default: `loop: <name> (<done> of <total> tasks)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The body (default: a summary of tasks, iterations, cost and verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Open it as a draft.
    #[serde(default)]
    pub draft: bool,
    /// The branch it merges into (default: the run's `base_branch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// Answer of `POST /runs/{id}/merge|scrap|create-pr`: the run afterwards and what was done.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewActionResponse {
    /// The run afterwards.
    #[serde(flatten)]
    pub run: RunResource,
    /// What was done or left alone, in words.
    #[serde(default)]
    pub details: Vec<String>,
}

/// Answer of `GET /runs/{id}/diff` (SPEC §12): `base_ref`, `head_ref`, `base_sha`,
/// `head_sha`, `commits`, `files`, `stats`, `truncated`.
pub type DiffResponse = loop_engine::engine::RunDiff;

/// One run's worktree on `GET /worktrees`.
pub type WorktreeResource = loop_engine::engine::WorktreeInfo;

/// Answer of `GET /worktrees`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorktreeList {
    /// Every run's worktree, newest run first.
    pub worktrees: Vec<WorktreeResource>,
}

/// A worktree `POST /worktrees/prune` could not remove.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneFailure {
    /// The worktree.
    #[serde(flatten)]
    pub worktree: WorktreeResource,
    /// Why.
    pub error: String,
}

/// Answer of `POST /worktrees/prune`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneResponse {
    /// The worktrees removed.
    pub removed: Vec<WorktreeResource>,
    /// The ones that could not be.
    #[serde(default)]
    pub failed: Vec<PruneFailure>,
}

/// The `data:` of an event on `GET /runs/{id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventResource {
    /// Per-run sequence number (also the SSE `id:`).
    pub seq: u64,
    /// The run.
    pub run_id: RunId,
    /// The step, if any.
    pub step_id: Option<StepId>,
    /// Kind (`RUN_CREATED`, ...; also the SSE `event:`).
    pub kind: String,
    /// When, RFC 3339.
    pub ts: String,
    /// When, ms.
    pub ts_ms: UnixMs,
    /// Detail.
    pub payload: serde_json::Value,
}

impl From<&Event> for EventResource {
    fn from(e: &Event) -> Self {
        Self {
            seq: e.seq,
            run_id: e.run_id,
            step_id: e.step_id,
            kind: e.kind.to_string(),
            ts: rfc3339(e.ts),
            ts_ms: e.ts,
            payload: e.payload.clone(),
        }
    }
}

/// The `data:` of an `event: step` on `GET /runs/{id}/output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMarker {
    /// The step whose output follows.
    pub step_id: StepId,
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:00:00.123Z`). Hand-written so the wire needs no date crate.
pub fn rfc3339(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn create_request_refuses_unknown_fields_and_passes_overrides() {
        let err = serde_json::from_str::<CreateRunRequest>(
            r#"{"spec_path":"s.md","workspace_root":"/w","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let req: CreateRunRequest = serde_json::from_str(
            r#"{"spec_path":"s.md","workspace_root":"/w","config_override":{"iterations":3,"reviewer":false,"model":"opus"},"merge_strategy":"squash"}"#,
        )
        .unwrap();
        let engine = req.to_engine();
        assert_eq!(engine.json_overrides["iterations"], 3);
        assert_eq!(engine.json_overrides["reviewer"], false);
        assert_eq!(engine.json_overrides["model"], "opus");
        assert!(engine.overrides.is_empty());
        assert_eq!(engine.merge_strategy, Some(MergeStrategy::Squash));
        let err = serde_json::from_str::<CreateRunRequest>(
            r#"{"spec_path":"s.md","workspace_root":"/w","merge_strategy":"rebase"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("rebase"), "{err}");
    }

    #[test]
    fn created_run_response_round_trips_with_flattened_run() {
        let run = Run {
            id: RunId::new(),
            name: "widget".into(),
            name_source: NameSource::SpecSlug,
            status: RunStatus::Pending,
            exit_reason: None,
            failure: None,
            workspace_root: "/w".into(),
            spec_path: "/w/specs/widget.md".into(),
            plan_path: "/w/specs/planning/widget-plan.md".into(),
            base_branch: "main".into(),
            run_branch: "loop/widget".into(),
            merge_target_branch: None,
            merge_strategy: MergeStrategy::None,
            worktree_path: "/w-wt".into(),
            config: serde_json::json!({"iterations": 3}),
            iterations_run: 0,
            tasks_done: 0,
            tasks_total: 3,
            created_at: 1000,
            updated_at: 2000,
            worker_id: None,
            lease_expires_at: None,
            lease_epoch: 0,
            review_status: loop_engine::domain::ReviewStatus::Pending,
            review_action_at: None,
            merge_commit: None,
            pr_url: None,
        };
        let resp = CreatedRunResponse {
            run: RunResource::new(&run, None),
            warnings: vec!["unknown key `x`".into()],
        };
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json["status"], "PENDING");
        assert_eq!(json["created_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["updated_at_ms"], 2000);
        assert_eq!(json["warnings"][0], "unknown key `x`");
        let back: CreatedRunResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, resp);
    }
}
