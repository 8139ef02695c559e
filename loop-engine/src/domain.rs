//! The data model of SPEC §9: runs, steps, events and artifacts, with the stable wire
//! spellings (`UPPER` statuses, `snake_case` phases and reasons) that the store, the HTTP API
//! and scripts rely on.
//!
//! Timestamps are milliseconds since the Unix epoch (`i64`): cheap to compare, to index and to
//! store in any database, and rendered to RFC 3339 only at the edges.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod payloads;

pub use payloads::{EventKind, EventPayload, ReportKind, ReportLine};

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// The current wall-clock time in [`UnixMs`].
pub fn now_ms() -> UnixMs {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| ParseEnumError {
                    what: stringify!($name),
                    value: s.to_owned(),
                })
            }
        }
    };
}

uuid_id!(
    /// Identifies a run (UUIDv7, so ids sort by creation time).
    RunId
);
uuid_id!(
    /// Identifies a step of a run (UUIDv7).
    StepId
);

/// A string did not name a known value of an enum of the data model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: `{value}`")]
pub struct ParseEnumError {
    /// What was being parsed (`RunStatus`, `StepPhase`, ...).
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
}

/// Declares a fieldless enum with one canonical spelling per variant, used by `Display`,
/// `FromStr`, serde and the database alike.
macro_rules! spelled_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::domain::ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::domain::ParseEnumError { what: stringify!($name), value: s.to_owned() }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

pub(crate) use spelled_enum;

spelled_enum!(
    /// Where a run is in its life.
    RunStatus {
        /// Created, waiting for a worker slot.
        Pending => "PENDING",
        /// Claimed by a worker; steps are being executed.
        Running => "RUNNING",
        /// Paused by a user at a step boundary; resumes on request.
        Paused => "PAUSED",
        /// Finished with the plan done (and merged, if a merge target is set).
        Completed => "COMPLETED",
        /// Ended by an error, a failed agent or an exhausted budget.
        Failed => "FAILED",
        /// Ended by a user.
        Canceled => "CANCELED",
    }
);

impl RunStatus {
    /// True once the run can never change state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

spelled_enum!(
    /// How a run got its name.
    NameSource {
        /// Derived from the spec's file name or first heading.
        SpecSlug => "spec_slug",
        /// Asked from the naming model.
        Haiku => "haiku",
    }
);

spelled_enum!(
    /// How finished work reaches the merge target branch.
    MergeStrategy {
        /// One squashed commit on the target.
        Squash => "squash",
        /// A merge commit (or fast-forward) on the target.
        Merge => "merge",
        /// Leave the run branch as it is.
        None => "none",
    }
);

spelled_enum!(
    /// Where a finished run is in a person's review (SPEC §12).
    ReviewStatus {
        /// Nobody acted on the run yet.
        Pending => "pending",
        /// The run branch was merged into a target (by the run's own merge or by `merge`).
        Merged => "merged",
        /// The worktree was removed and the run branch deleted.
        Scrapped => "scrapped",
        /// A pull request was opened for the run branch.
        PrCreated => "pr_created",
    }
);

#[expect(
    clippy::derivable_impls,
    reason = "spelled_enum! declares the enum; one of its enums takes no extra derive"
)]
impl Default for ReviewStatus {
    fn default() -> Self {
        Self::Pending
    }
}

spelled_enum!(
    /// The kind of work a step does.
    StepPhase {
        /// The agent implements one task.
        Implementation => "implementation",
        /// The agent reviews one implemented task.
        Review => "review",
        /// The project's verification commands.
        Verification => "verification",
        /// The watchdog rewrote the prompt.
        Watchdog => "watchdog",
        /// The run branch is merged into the merge target.
        Merge => "merge",
        /// The naming model names the run.
        Naming => "naming",
        /// A `setup_cmds` command in the new worktree.
        Setup => "setup",
        /// The run waits for the account's usage limit to reset: `started_at` is when the
        /// wait began and `ended_at` when it ends (set when the wait is decided, so a
        /// restarted daemon waits for the rest instead of calling the agent).
        UsageWait => "usage_wait",
    }
);

spelled_enum!(
    /// Where a step is in its life.
    StepStatus {
        /// Recorded, not started.
        Queued => "QUEUED",
        /// Running now.
        InProgress => "IN_PROGRESS",
        /// Finished and accepted.
        Succeeded => "SUCCEEDED",
        /// Finished and rejected (see the step's `reason`).
        Failed => "FAILED",
        /// Failed, and another attempt follows.
        Retrying => "RETRYING",
        /// Stopped by a cancel.
        Canceled => "CANCELED",
    }
);

impl StepStatus {
    /// True once the step will not change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::InProgress)
    }
}

spelled_enum!(
    /// Where an artifact file lives.
    ArtifactLocation {
        /// Under `<workspace>/<log_dir>/run-<id>/`.
        Workspace => "workspace",
        /// Under `<global_log_dir>/runs/run-<id>/`.
        Global => "global",
    }
);

spelled_enum!(
    /// What an artifact file is (SPEC §7).
    ArtifactKind {
        /// `prompt.txt`: the prompt snapshot.
        Prompt => "prompt",
        /// `run.log`: the human-readable run log.
        RunLog => "run_log",
        /// `report.tsv`.
        Report => "report",
        /// `summary.json`.
        Summary => "summary",
        /// `runner-notes.txt`.
        RunnerNotes => "runner_notes",
        /// `iter-<slug>.log`: a whole agent output.
        IterationLog => "iteration_log",
        /// `iter-<slug>.tail.txt`: its last 200 lines.
        IterationTail => "iteration_tail",
        /// `verify/verify-<slug>-<n>.log`.
        VerifyLog => "verify_log",
        /// `verify/verify-<slug>-failure.txt`.
        VerifyFailure => "verify_failure",
        /// `prompt.rewrite.<n>.txt`.
        PromptRewrite => "prompt_rewrite",
        /// `analysis/*`: a postmortem's git snapshot, prompts and reports.
        Analysis => "analysis",
        /// `naming.log`: the naming call's whole output.
        NamingLog => "naming_log",
        /// `setup/setup-<n>.log`: a setup command's output.
        SetupLog => "setup_log",
        /// Anything else a backend chose to record.
        Other => "other",
    }
);

/// Why a run ended (SPEC §6). Serialised as its text, e.g. `complete_plan` or
/// `max_consecutive_failures:verification:3`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitReason {
    /// No pending tasks and final verification green.
    CompletePlan,
    /// The reviewer answered the completion token with nothing pending.
    CompleteReviewer,
    /// The iteration budget ran out.
    IterationsExhausted,
    /// The agent kept failing after its retries.
    ClaudeFailed,
    /// Too many failures of one kind in a row, e.g. verification.
    MaxConsecutiveFailures {
        /// What kept failing (`verification`).
        kind: String,
        /// The configured limit that was reached.
        limit: u32,
    },
    /// The run's plan (as snapshotted at creation) had no open task and nothing to review when
    /// the run started: no agent step ran, nothing was verified or merged. Ends `FAILED`, with
    /// the plan's counts in the failure reason.
    PlanAlreadyDone,
    /// Implementation steps kept changing neither the plan nor HEAD (`max_no_progress_steps`
    /// in a row, after the watchdog's rewrites) (SPEC §15).
    NoProgress,
    /// A budget of the run was spent: `budget_exhausted:cost`, `:tokens` or `:wall`
    /// (SPEC §15).
    BudgetExhausted {
        /// `cost`, `tokens` or `wall`.
        kind: String,
    },
    /// A `setup_cmds` command failed in the new worktree; no agent ran.
    SetupFailed,
    /// Any other failure (store, git, merge, config); the detail is in `RUN_FAILED`.
    Failed,
    /// A user canceled the run.
    Canceled,
}

impl ExitReason {
    /// True for the reasons that mean the plan was finished.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::CompletePlan | Self::CompleteReviewer)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CompletePlan => f.write_str("complete_plan"),
            Self::CompleteReviewer => f.write_str("complete_reviewer"),
            Self::IterationsExhausted => f.write_str("iterations_exhausted"),
            Self::ClaudeFailed => f.write_str("claude_failed"),
            Self::MaxConsecutiveFailures { kind, limit } => {
                write!(f, "max_consecutive_failures:{kind}:{limit}")
            }
            Self::PlanAlreadyDone => f.write_str("plan_already_done"),
            Self::NoProgress => f.write_str("no_progress"),
            Self::BudgetExhausted { kind } => write!(f, "budget_exhausted:{kind}"),
            Self::SetupFailed => f.write_str("setup_failed"),
            Self::Failed => f.write_str("failed"),
            Self::Canceled => f.write_str("canceled"),
        }
    }
}

impl FromStr for ExitReason {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseEnumError {
            what: "ExitReason",
            value: s.to_owned(),
        };
        Ok(match s {
            "complete_plan" => Self::CompletePlan,
            "complete_reviewer" => Self::CompleteReviewer,
            "iterations_exhausted" => Self::IterationsExhausted,
            "claude_failed" => Self::ClaudeFailed,
            "plan_already_done" => Self::PlanAlreadyDone,
            "no_progress" => Self::NoProgress,
            "setup_failed" => Self::SetupFailed,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            other if other.starts_with("budget_exhausted:") => {
                let kind = &other["budget_exhausted:".len()..];
                if kind.is_empty() {
                    return Err(bad());
                }
                Self::BudgetExhausted {
                    kind: kind.to_owned(),
                }
            }
            other => {
                let rest = other
                    .strip_prefix("max_consecutive_failures:")
                    .ok_or_else(bad)?;
                let (kind, limit) = rest.rsplit_once(':').ok_or_else(bad)?;
                let limit = limit.parse().map_err(|_| bad())?;
                if kind.is_empty() {
                    return Err(bad());
                }
                Self::MaxConsecutiveFailures {
                    kind: kind.to_owned(),
                    limit,
                }
            }
        })
    }
}

impl Serialize for ExitReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExitReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One loop run: a spec and plan worked in its own worktree until done (SPEC §9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// UUIDv7 id.
    pub id: RunId,
    /// Short human name (ASCII, at most 64 characters).
    pub name: String,
    /// How the name was chosen.
    pub name_source: NameSource,
    /// Life-cycle state.
    pub status: RunStatus,
    /// Why the run ended; `None` until it is terminal.
    pub exit_reason: Option<ExitReason>,
    /// Human-readable detail of a failure (`RUN_FAILED` reason).
    pub failure: Option<String>,
    /// The git root (or directory) the run belongs to.
    pub workspace_root: PathBuf,
    /// The spec, as resolved at creation (absolute path in the primary checkout).
    pub spec_path: PathBuf,
    /// The plan, as resolved at creation (absolute path in the primary checkout).
    pub plan_path: PathBuf,
    /// The branch the run branch starts from.
    pub base_branch: String,
    /// The run's own branch.
    pub run_branch: String,
    /// Where finished work is merged; `None` leaves the run branch alone.
    pub merge_target_branch: Option<String>,
    /// How finished work is merged.
    pub merge_strategy: MergeStrategy,
    /// The run's git worktree.
    pub worktree_path: PathBuf,
    /// The effective configuration (JSON object of SPEC §8 keys).
    pub config: serde_json::Value,
    /// Iterations started so far.
    pub iterations_run: u32,
    /// `tasks_done` of the plan at the last re-read.
    pub tasks_done: u32,
    /// `tasks_total` of the plan at the last re-read.
    pub tasks_total: u32,
    /// Creation time.
    pub created_at: UnixMs,
    /// Last change.
    pub updated_at: UnixMs,
    /// The worker holding the run's lease, if any.
    pub worker_id: Option<String>,
    /// When that lease expires.
    pub lease_expires_at: Option<UnixMs>,
    /// The fencing token of the run's lease: 0 for a run never claimed, one more with every
    /// claim. A worker presents the epoch of its claim with its writes
    /// ([`StoreWrite::Fence`](crate::backend::StoreWrite::Fence)); once another worker has
    /// claimed the run, the old epoch is refused.
    #[serde(default)]
    pub lease_epoch: u64,
    /// Where the run is in a person's review (SPEC §12).
    #[serde(default)]
    pub review_status: ReviewStatus,
    /// When the last review action (or the run's own merge) happened.
    #[serde(default)]
    pub review_action_at: Option<UnixMs>,
    /// The target's commit that holds the run's work, once merged.
    #[serde(default)]
    pub merge_commit: Option<String>,
    /// The pull request opened for the run branch.
    #[serde(default)]
    pub pr_url: Option<String>,
}

/// One unit of work inside a run: an agent call, a verification, a merge, ...
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// UUIDv7 id.
    pub id: StepId,
    /// The run it belongs to.
    pub run_id: RunId,
    /// 1-based order of the step within its run.
    pub seq: u32,
    /// The iteration it belongs to (0 for steps before the first iteration, e.g. naming).
    pub iteration: u32,
    /// The iteration label, e.g. `3`, `3A2`, `3R1`, `3R1A2`.
    pub label: String,
    /// What kind of work.
    pub phase: StepPhase,
    /// Life-cycle state.
    pub status: StepStatus,
    /// 1-based attempt number (retries and watchdog rewrites increment it).
    pub attempt: u32,
    /// Start time.
    pub started_at: Option<UnixMs>,
    /// End time.
    pub ended_at: Option<UnixMs>,
    /// Process exit code (124 on timeout).
    pub exit_code: Option<i32>,
    /// Why the step failed, when it did (`interrupted`, `timeout`, ...).
    pub reason: Option<String>,
    /// The prompt file used.
    pub prompt_path: Option<PathBuf>,
    /// The whole output on disk.
    pub output_path: Option<PathBuf>,
    /// Git HEAD of the worktree before the step.
    pub head_before: Option<String>,
    /// Git HEAD of the worktree after the step.
    pub head_after: Option<String>,
    /// The agent process, while it runs (for recovery after a crash).
    pub agent_pid: Option<u32>,
    /// Start time of the agent process in clock ticks since boot (guards against pid reuse).
    pub agent_start_time: Option<u64>,
    /// What the agent's stream-json `result` line reported, if any.
    pub usage: Option<AgentUsage>,
    /// What the agent's processes used, measured by its cgroup (`None` without cgroups, or
    /// before the step ran).
    pub resources: Option<AgentResources>,
}

/// What one agent invocation used, from the cgroup it ran in (see `process::containment`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResources {
    /// CPU time of every process of the invocation, in microseconds (`cpu.stat usage_usec`).
    pub cpu_usec: u64,
    /// Peak memory in bytes, where a memory controller is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Most processes alive at once, where a pids controller is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_peak: Option<u64>,
    /// The limit that stopped the agent (`agent_pids_max`, `agent_memory_max`), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_hit: Option<String>,
}

/// Token usage, cost and turn count from the agent's final `result` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentUsage {
    /// `num_turns`.
    pub num_turns: Option<u64>,
    /// `usage.input_tokens`.
    pub input_tokens: Option<u64>,
    /// `usage.output_tokens`.
    pub output_tokens: Option<u64>,
    /// `usage.cache_read_input_tokens`.
    pub cache_read_input_tokens: Option<u64>,
    /// `usage.cache_creation_input_tokens`.
    pub cache_creation_input_tokens: Option<u64>,
    /// `total_cost_usd`.
    pub cost_usd: Option<f64>,
    /// `is_error`.
    pub is_error: bool,
    /// `duration_api_ms`.
    pub duration_api_ms: Option<u64>,
    /// The model the agent reported (`model`, else the costliest key of `modelUsage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// An event to append; the store assigns its id and per-run sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The run it belongs to.
    pub run_id: RunId,
    /// The step it belongs to, if any.
    pub step_id: Option<StepId>,
    /// Event type.
    pub kind: EventKind,
    /// When it happened.
    pub ts: UnixMs,
    /// Structured detail (a JSON object; typed: [`EventPayload`]).
    pub payload: serde_json::Value,
}

impl NewEvent {
    /// An event of `kind` for `run_id`, stamped now.
    pub fn new(run_id: RunId, kind: EventKind, payload: serde_json::Value) -> Self {
        Self {
            run_id,
            step_id: None,
            kind,
            ts: now_ms(),
            payload,
        }
    }

    /// The same event, tied to a step.
    pub fn with_step(mut self, step_id: StepId) -> Self {
        self.step_id = Some(step_id);
        self
    }
}

/// An appended, immutable event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per-run sequence number: 1, 2, 3, ... without gaps (the SSE `id:`).
    pub seq: u64,
    /// The run it belongs to.
    pub run_id: RunId,
    /// The step it belongs to, if any.
    pub step_id: Option<StepId>,
    /// Event type.
    pub kind: EventKind,
    /// When it happened.
    pub ts: UnixMs,
    /// Structured detail (a JSON object).
    pub payload: serde_json::Value,
}

/// An artifact file to record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewArtifact {
    /// The run it belongs to.
    pub run_id: RunId,
    /// What it is.
    pub kind: ArtifactKind,
    /// Where it lives.
    pub location: ArtifactLocation,
    /// Absolute path.
    pub path: PathBuf,
    /// SHA-256 of the contents, hex.
    pub checksum: String,
}

/// A recorded artifact file. Recording the same `(run_id, location, path)` again updates the
/// checksum instead of adding a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Store-assigned id.
    pub id: i64,
    /// The run it belongs to.
    pub run_id: RunId,
    /// What it is.
    pub kind: ArtifactKind,
    /// Where it lives.
    pub location: ArtifactLocation,
    /// Absolute path.
    pub path: PathBuf,
    /// SHA-256 of the contents, hex.
    pub checksum: String,
    /// When it was (last) recorded.
    pub recorded_at: UnixMs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_upper_spellings() {
        assert_eq!(
            serde_json::to_string(&RunStatus::Pending).unwrap(),
            "\"PENDING\""
        );
        assert_eq!(
            serde_json::to_string(&StepStatus::InProgress).unwrap(),
            "\"IN_PROGRESS\""
        );
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>().unwrap(), *s);
        }
    }

    #[test]
    fn phases_and_sources_use_snake_case() {
        assert_eq!(StepPhase::Implementation.as_str(), "implementation");
        assert_eq!(NameSource::SpecSlug.as_str(), "spec_slug");
        assert_eq!(
            serde_json::from_str::<MergeStrategy>("\"squash\"").unwrap(),
            MergeStrategy::Squash
        );
        assert!(serde_json::from_str::<MergeStrategy>("\"rebase\"").is_err());
    }

    #[test]
    fn exit_reasons_round_trip() {
        let all = [
            ExitReason::CompletePlan,
            ExitReason::CompleteReviewer,
            ExitReason::IterationsExhausted,
            ExitReason::ClaudeFailed,
            ExitReason::PlanAlreadyDone,
            ExitReason::NoProgress,
            ExitReason::SetupFailed,
            ExitReason::BudgetExhausted {
                kind: "cost".into(),
            },
            ExitReason::Failed,
            ExitReason::Canceled,
            ExitReason::MaxConsecutiveFailures {
                kind: "verification".into(),
                limit: 3,
            },
        ];
        for r in all {
            let text = r.to_string();
            assert_eq!(text.parse::<ExitReason>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<ExitReason>(&json).unwrap(), r);
        }
        assert_eq!(
            ExitReason::MaxConsecutiveFailures {
                kind: "verification".into(),
                limit: 3
            }
            .to_string(),
            "max_consecutive_failures:verification:3"
        );
        assert!("max_consecutive_failures::3".parse::<ExitReason>().is_err());
        assert!("done".parse::<ExitReason>().is_err());
    }

    #[test]
    fn event_kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
        }
        assert_eq!(EventKind::RunEnd.as_str(), "RUN_END");
    }

    #[test]
    fn run_ids_are_time_ordered() {
        let a = RunId::new();
        let b = RunId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<RunId>().unwrap(), a);
        assert!("nope".parse::<RunId>().is_err());
    }
}
