//! Typed event payloads: one variant of [`EventPayload`] per [`EventKind`], each with the
//! fields its JSON payload carries. The store and the wire keep the JSON; an event's payload
//! is built from these types and read back with [`EventPayload::parse`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::{
    Event, EventKind, ExitReason, MergeStrategy, NameSource, NewEvent, RunId, StepId, StepPhase,
    StepStatus, now_ms,
};

/// `RUN_CREATED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCreated {
    /// The run.
    pub run_id: RunId,
    /// Its name.
    pub name: String,
    /// How it got the name.
    pub name_source: NameSource,
    /// The spec.
    pub spec_path: PathBuf,
    /// The plan.
    pub plan_path: PathBuf,
    /// Warnings of the configuration.
    pub warnings: Vec<String>,
}

/// `RUN_STARTED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The run.
    pub run_id: RunId,
    /// The worker that claimed it.
    pub worker_id: String,
}

/// `STEP_STARTED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStarted {
    /// The step.
    pub step_id: StepId,
    /// Its phase.
    pub phase: StepPhase,
    /// Its attempt.
    pub attempt: u32,
    /// Its label (`3`, `3R1`, `3A2`, ...).
    pub label: String,
    /// Its iteration.
    pub iteration: u32,
}

/// `STEP_FINISHED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepFinished {
    /// The step.
    pub step_id: StepId,
    /// Its phase.
    pub phase: StepPhase,
    /// How it ended.
    pub status: StepStatus,
    /// The agent's or command's exit code.
    pub exit_code: Option<i32>,
    /// How long it ran.
    pub duration_ms: u64,
    /// Its log.
    pub output_path: Option<PathBuf>,
    /// Why it ended so (failures, cancels).
    pub reason: Option<String>,
}

/// `WATCHDOG_REWRITE`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchdogRewrite {
    /// The agent step that raised the signal, or the watchdog step.
    pub step_id: StepId,
    /// The signal (`no_progress`, `repeated_task`, `verification_failed`,
    /// `malformed_complete`).
    pub signal: String,
    /// The signal in words.
    pub detail: String,
    /// The prompt before the rewrite.
    pub prompt_before: PathBuf,
    /// The rewritten prompt.
    pub prompt_after: PathBuf,
    /// The rewrite's number in the run.
    pub rewrite: u32,
}

/// `RUN_COMPLETED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCompleted {
    /// The run.
    pub run_id: RunId,
    /// The exit reason (`complete_plan`, `complete_reviewer`).
    pub mode: String,
    /// Why the merge into the target branch is still to do, when the work is done but could not
    /// be merged (the target is checked out with uncommitted changes); `None` otherwise.
    #[serde(default)]
    pub merge_pending: Option<String>,
}

/// `RUN_FAILED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFailed {
    /// The run.
    pub run_id: RunId,
    /// What went wrong, in words.
    pub reason: String,
    /// The exit reason.
    pub exit_reason: String,
}

/// `RUN_CANCELED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCanceled {
    /// The run.
    pub run_id: RunId,
    /// `canceled` when the run was executing; absent when it was canceled idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `RUN_PAUSED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPaused {
    /// The run.
    pub run_id: RunId,
    /// `queue` (paused before it started) or `step_boundary`.
    pub at: String,
}

/// `RUN_RESUMED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResumed {
    /// The run.
    pub run_id: RunId,
}

/// `RUN_NAMED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunNamed {
    /// The name.
    pub name: String,
    /// Where it came from.
    pub name_source: NameSource,
    /// Why the naming model's answer was not used, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// `WORKTREE_READY`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorktreeReady {
    /// The worktree.
    pub path: PathBuf,
    /// The run branch.
    pub branch: String,
    /// The branch it started from.
    pub base_branch: String,
    /// The run branch was created now.
    pub created_branch: bool,
    /// The worktree was created now.
    pub created_worktree: bool,
}

/// `SEED_COMMITTED`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedCommitted {
    /// The files committed, relative to the worktree.
    pub paths: Vec<PathBuf>,
    /// The commit (`None` when there was nothing to commit).
    pub commit: Option<String>,
}

/// `RECOVERY_CLEANUP`: what was cleaned up, in one of these shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecoveryCleanup {
    /// Debris found while preparing the worktree.
    Worktree {
        /// Stale locks and worktree registrations removed.
        cleaned: Vec<String>,
    },
    /// An unfinished step of a crashed daemon was marked failed.
    StepInterrupted {
        /// The run.
        run_id: RunId,
        /// The step.
        step_id: StepId,
        /// What was done.
        action: String,
        /// The agent killed, if one survived.
        killed_agent_pid: Option<u32>,
    },
    /// Agents whose pid was never recorded were found by the run id and killed.
    KilledUnrecorded {
        /// The run.
        run_id: RunId,
        /// What was done.
        action: String,
        /// The processes killed.
        killed_pids: Vec<u32>,
    },
    /// The uncommitted changes of an interrupted step were stashed.
    Stashed {
        /// The run.
        run_id: RunId,
        /// What was done.
        action: String,
        /// The stash entry's message.
        stash_message: String,
    },
    /// git processes of a previous daemon were waited for (or stopped) before recovery.
    WaitedForGit {
        /// The run.
        run_id: RunId,
        /// What was done.
        action: String,
        /// The git processes.
        git_pids: Vec<u32>,
    },
    /// Anything else done to a run (requeued, a stale lock removed).
    Action {
        /// The run.
        run_id: RunId,
        /// What was done.
        action: String,
    },
}

/// `MERGE_DONE`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeDone {
    /// The merge target branch.
    pub target: String,
    /// The strategy.
    pub strategy: MergeStrategy,
    /// `merged`, `already_merged` or `nothing_to_merge`.
    pub outcome: String,
    /// The target's commit after the merge.
    pub commit: Option<String>,
    /// The user's checkout that was moved along with the target (it had the target checked out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<PathBuf>,
    /// What happened to the user's checkout, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `MERGE_PENDING`: the work is done, but the merge could not be made without touching
/// uncommitted changes in the user's checkout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergePending {
    /// The merge target branch.
    pub target: String,
    /// The strategy.
    pub strategy: MergeStrategy,
    /// The run branch that holds the work.
    pub run_branch: String,
    /// Why the merge waits.
    pub reason: String,
}

/// What a person did to a finished run (`REVIEW_ACTION`'s `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewActionKind {
    /// The run branch was merged into a target (`loopctl merge`, `POST /runs/{id}/merge`).
    Merge,
    /// The worktree was removed and the run branch deleted (`loopctl scrap`).
    Scrap,
    /// A pull request was opened with `gh pr create` (`loopctl pr`).
    CreatePr,
}

impl ReviewActionKind {
    /// The spelling used in events and messages: `merge`, `scrap`, `create_pr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Scrap => "scrap",
            Self::CreatePr => "create_pr",
        }
    }
}

/// `REVIEW_ACTION`: a review action on a finished run is done (SPEC §12). One event kind for
/// every action, so a notifier needs a single rule for "a person acted on a run".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewAction {
    /// The run.
    pub run_id: RunId,
    /// What was done.
    pub action: ReviewActionKind,
    /// The run's review status afterwards (`merged`, `scrapped`, `pr_created`).
    pub review_status: String,
    /// The branch merged into (merge) or the pull request's base (create_pr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The strategy of a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<MergeStrategy>,
    /// The target's commit after a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    /// The pull request's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// What else was done or left alone, in words (worktree removed, branch deleted, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// `RUN_RETRIED`: a failed or canceled run was queued again to go on from its last durable
/// step, on the same branch and worktree, with a fresh iteration budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRetried {
    /// The run.
    pub run_id: RunId,
    /// The status it had (`FAILED` or `CANCELED`).
    pub previous_status: String,
    /// The exit reason it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_exit_reason: Option<String>,
    /// Iterations run before the retry; the new budget counts from here.
    pub iterations_before: u32,
    /// The fresh budget: this many more iterations.
    pub iterations: u32,
}

/// `CLAUDE_API_RETRY`: the agent CLI retried an API call (fields as the CLI reported them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaudeApiRetry {
    /// Its attempt number.
    pub attempt: Option<u64>,
    /// Its retry limit.
    pub max_retries: Option<u64>,
    /// Its delay before the retry.
    pub delay_ms: Option<u64>,
    /// HTTP status of the failed call.
    pub error_status: Option<u16>,
    /// Error kind or text.
    pub error: Option<String>,
}

/// The payload of every report.tsv kind: the row's fields (SPEC §7) and the plan's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportLine {
    /// The step's label (empty for run-level rows).
    pub iteration: String,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Output size.
    pub output_bytes: Option<u64>,
    /// Output lines.
    pub output_lines: Option<u64>,
    /// The file it refers to.
    pub output_path: Option<PathBuf>,
    /// The row's message.
    pub message: String,
    /// Tasks done.
    pub tasks_done: u32,
    /// Tasks in the plan.
    pub tasks_total: u32,
}

macro_rules! event_payloads {
    (
        control { $( $(#[$cdoc:meta])* $cvariant:ident($cty:ty) => $ckind:literal, )* }
        report { $( $(#[$rdoc:meta])* $rvariant:ident => $rkind:literal, )* }
    ) => {
        /// The payload of an event, typed: one variant per [`EventKind`]. Serialized with
        /// serde it is `{"kind": "<KIND>", "payload": {...}}`, the shape of an event.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "payload")]
        pub enum EventPayload {
            $( $(#[$cdoc])* #[serde(rename = $ckind)] $cvariant($cty), )*
            $( $(#[$rdoc])* #[serde(rename = $rkind)] $rvariant(ReportLine), )*
        }

        /// The event kinds that are report.tsv rows (their payload is a [`ReportLine`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ReportKind {
            $( $(#[$rdoc])* $rvariant, )*
        }

        impl From<ReportKind> for EventKind {
            fn from(kind: ReportKind) -> Self {
                match kind {
                    $( ReportKind::$rvariant => EventKind::$rvariant, )*
                }
            }
        }

        impl EventPayload {
            /// Every kind that has a payload variant.
            pub const KINDS: &'static [EventKind] = &[
                $( EventKind::$cvariant, )*
                $( EventKind::$rvariant, )*
            ];

            /// The event's kind.
            pub fn kind(&self) -> EventKind {
                match self {
                    $( Self::$cvariant(_) => EventKind::$cvariant, )*
                    $( Self::$rvariant(_) => EventKind::$rvariant, )*
                }
            }

            /// A report row's payload.
            pub fn report(kind: ReportKind, line: ReportLine) -> Self {
                match kind {
                    $( ReportKind::$rvariant => Self::$rvariant(line), )*
                }
            }

            /// The JSON payload as stored and sent (without the kind).
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self {
                    $( Self::$cvariant(p) => serde_json::to_value(p), )*
                    $( Self::$rvariant(p) => serde_json::to_value(p), )*
                };
                // Plain structs of strings, numbers and paths: serializing cannot fail.
                value.unwrap_or(serde_json::Value::Null)
            }

            /// Reads the payload of an event of `kind` back.
            pub fn parse(kind: EventKind, json: &serde_json::Value) -> Result<Self, serde_json::Error> {
                Ok(match kind {
                    $( EventKind::$cvariant => Self::$cvariant(<$cty>::deserialize(json)?), )*
                    $( EventKind::$rvariant => Self::$rvariant(ReportLine::deserialize(json)?), )*
                })
            }
        }
    };
}

event_payloads! {
    control {
        /// A run was created.
        RunCreated(RunCreated) => "RUN_CREATED",
        /// A worker claimed the run.
        RunStarted(RunStarted) => "RUN_STARTED",
        /// A step began.
        StepStarted(StepStarted) => "STEP_STARTED",
        /// A step ended.
        StepFinished(StepFinished) => "STEP_FINISHED",
        /// The watchdog rewrote the prompt.
        WatchdogRewrite(WatchdogRewrite) => "WATCHDOG_REWRITE",
        /// The run completed.
        RunCompleted(RunCompleted) => "RUN_COMPLETED",
        /// The run failed.
        RunFailed(RunFailed) => "RUN_FAILED",
        /// The run was canceled.
        RunCanceled(RunCanceled) => "RUN_CANCELED",
        /// The run was paused.
        RunPaused(RunPaused) => "RUN_PAUSED",
        /// The run was resumed.
        RunResumed(RunResumed) => "RUN_RESUMED",
        /// The run was named.
        RunNamed(RunNamed) => "RUN_NAMED",
        /// The worktree is ready.
        WorktreeReady(WorktreeReady) => "WORKTREE_READY",
        /// Spec or plan were committed into the worktree.
        SeedCommitted(SeedCommitted) => "SEED_COMMITTED",
        /// Debris was cleaned up.
        RecoveryCleanup(RecoveryCleanup) => "RECOVERY_CLEANUP",
        /// The run branch was merged.
        MergeDone(MergeDone) => "MERGE_DONE",
        /// The merge waits for the user's checkout.
        MergePending(MergePending) => "MERGE_PENDING",
        /// The agent CLI retried an API call.
        ClaudeApiRetry(ClaudeApiRetry) => "CLAUDE_API_RETRY",
        /// A review action (merge, scrap, create-pr) is done.
        ReviewAction(ReviewAction) => "REVIEW_ACTION",
        /// A failed or canceled run was started again.
        RunRetried(RunRetried) => "RUN_RETRIED",
    }
    report {
        /// The run started.
        RunStart => "RUN_START",
        /// The prompt was snapshotted.
        PromptSnapshot => "PROMPT_SNAPSHOT",
        /// An agent step started.
        IterationStart => "ITERATION_START",
        /// An agent step ended.
        IterationEnd => "ITERATION_END",
        /// The tail file of an agent step was written.
        IterationTail => "ITERATION_TAIL",
        /// An agent step is retried.
        ClaudeRetry => "CLAUDE_RETRY",
        /// An agent step hit its timeout.
        IterationTimeout => "ITERATION_TIMEOUT",
        /// A running step is still alive.
        Heartbeat => "HEARTBEAT",
        /// A step runs long.
        WarnIterationLong => "WARN_ITERATION_LONG",
        /// A step printed a lot.
        WarnOutputLarge => "WARN_OUTPUT_LARGE",
        /// Verification started.
        VerifyStart => "VERIFY_START",
        /// One verification command started.
        VerifyCmdStart => "VERIFY_CMD_START",
        /// One verification command ended.
        VerifyCmdEnd => "VERIFY_CMD_END",
        /// Verification ended.
        VerifyEnd => "VERIFY_END",
        /// Verification was skipped.
        VerifySkip => "VERIFY_SKIP",
        /// The completion token was accepted.
        CompleteDetected => "COMPLETE_DETECTED",
        /// The token came in a form that is not accepted.
        WarnMalformedComplete => "WARN_MALFORMED_COMPLETE",
        /// The agent claimed completion with tasks pending.
        WarnCompleteWithPending => "WARN_COMPLETE_WITH_PENDING",
        /// The reviewer claimed completion with tasks pending.
        WarnReviewerCompleteWithPending => "WARN_REVIEWER_COMPLETE_WITH_PENDING",
        /// The merge of the run branch into its target started.
        MergeStart => "MERGE_START",
        /// The merge ended (`status=ok|failed|pending`).
        MergeEnd => "MERGE_END",
        /// A step ticked tasks in the plan without committing.
        WarnTickWithoutCommit => "WARN_TICK_WITHOUT_COMMIT",
        /// Why the run failed (`reason=<exit reason> failure=<why>`), before RUN_END.
        RunFailure => "RUN_FAILURE",
        /// The run waits for a usage limit's reset.
        UsageLimitWait => "USAGE_LIMIT_WAIT",
        /// A setup command started.
        SetupCmdStart => "SETUP_CMD_START",
        /// A setup command ended.
        SetupCmdEnd => "SETUP_CMD_END",
        /// The run ended.
        RunEnd => "RUN_END",
        /// The postmortem started.
        PostmortemStart => "POSTMORTEM_START",
        /// The postmortem ended (`status=ok|failed`).
        PostmortemEnd => "POSTMORTEM_END",
    }
}

impl NewEvent {
    /// An event of `run_id` with a typed payload (its kind is the payload's), stamped now.
    pub fn typed(run_id: RunId, payload: &EventPayload) -> Self {
        Self {
            run_id,
            step_id: None,
            kind: payload.kind(),
            ts: now_ms(),
            payload: payload.to_json(),
        }
    }
}

impl Event {
    /// The payload, typed.
    pub fn typed_payload(&self) -> Result<EventPayload, serde_json::Error> {
        EventPayload::parse(self.kind, &self.payload)
    }
}

impl RunFailed {
    /// The payload of a failed run.
    pub fn new(run_id: RunId, reason: impl Into<String>, exit_reason: &ExitReason) -> Self {
        Self {
            run_id,
            reason: reason.into(),
            exit_reason: exit_reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_event_kind_has_a_payload_type() {
        for kind in EventKind::ALL {
            assert!(
                EventPayload::KINDS.contains(kind),
                "{kind} has no EventPayload variant"
            );
        }
        assert_eq!(EventPayload::KINDS.len(), EventKind::ALL.len());
    }

    /// The JSON of each typed payload is what the engine wrote before the types existed
    /// (the `json!` literals it replaced): existing clients read the same bytes.
    #[test]
    fn payloads_keep_their_json_shape() {
        let run_id = RunId::new();
        let step_id = StepId::new();
        let cases: Vec<(EventPayload, serde_json::Value)> = vec![
            (
                EventPayload::RunCreated(RunCreated {
                    run_id,
                    name: "n".into(),
                    name_source: NameSource::SpecSlug,
                    spec_path: "/w/specs/a.md".into(),
                    plan_path: "/w/specs/planning/a-plan.md".into(),
                    warnings: vec!["w".into()],
                }),
                json!({"run_id": run_id, "name": "n", "name_source": NameSource::SpecSlug,
                       "spec_path": "/w/specs/a.md", "plan_path": "/w/specs/planning/a-plan.md",
                       "warnings": ["w"]}),
            ),
            (
                EventPayload::StepFinished(StepFinished {
                    step_id,
                    phase: StepPhase::Implementation,
                    status: StepStatus::Failed,
                    exit_code: None,
                    duration_ms: 5,
                    output_path: None,
                    reason: Some("x".into()),
                }),
                json!({"step_id": step_id, "phase": StepPhase::Implementation,
                       "status": StepStatus::Failed, "exit_code": null, "duration_ms": 5,
                       "output_path": null, "reason": "x"}),
            ),
            (
                EventPayload::RunCanceled(RunCanceled {
                    run_id,
                    reason: None,
                }),
                json!({"run_id": run_id}),
            ),
            (
                EventPayload::RunCanceled(RunCanceled {
                    run_id,
                    reason: Some("canceled".into()),
                }),
                json!({"run_id": run_id, "reason": "canceled"}),
            ),
            (
                EventPayload::RunNamed(RunNamed {
                    name: "n".into(),
                    name_source: NameSource::Haiku,
                    fallback_reason: None,
                }),
                json!({"name": "n", "name_source": "haiku"}),
            ),
            (
                EventPayload::RunNamed(RunNamed {
                    name: "n".into(),
                    name_source: NameSource::SpecSlug,
                    fallback_reason: Some("r".into()),
                }),
                json!({"name": "n", "name_source": "spec_slug", "fallback_reason": "r"}),
            ),
            (
                EventPayload::RecoveryCleanup(RecoveryCleanup::StepInterrupted {
                    run_id,
                    step_id,
                    action: "a".into(),
                    killed_agent_pid: None,
                }),
                json!({"run_id": run_id, "step_id": step_id, "action": "a",
                       "killed_agent_pid": null}),
            ),
            (
                EventPayload::RecoveryCleanup(RecoveryCleanup::Action {
                    run_id,
                    action: "requeued after restart".into(),
                }),
                json!({"run_id": run_id, "action": "requeued after restart"}),
            ),
            (
                EventPayload::RecoveryCleanup(RecoveryCleanup::Worktree {
                    cleaned: vec!["lock".into()],
                }),
                json!({"cleaned": ["lock"]}),
            ),
            (
                EventPayload::MergeDone(MergeDone {
                    target: "main".into(),
                    strategy: MergeStrategy::Squash,
                    outcome: "nothing_to_merge".into(),
                    commit: None,
                    checkout: None,
                    message: None,
                }),
                json!({"target": "main", "strategy": MergeStrategy::Squash,
                       "outcome": "nothing_to_merge", "commit": null}),
            ),
            (
                EventPayload::report(
                    ReportKind::VerifyEnd,
                    ReportLine {
                        iteration: "3".into(),
                        duration_ms: Some(7),
                        exit_code: Some(0),
                        message: "passed".into(),
                        tasks_done: 1,
                        tasks_total: 2,
                        ..ReportLine::default()
                    },
                ),
                json!({"iteration": "3", "duration_ms": 7, "exit_code": 0,
                       "output_bytes": null, "output_lines": null, "output_path": null,
                       "message": "passed", "tasks_done": 1, "tasks_total": 2}),
            ),
        ];
        for (typed, old) in cases {
            let new = typed.to_json();
            assert_eq!(
                serde_json::to_string(&new).unwrap(),
                serde_json::to_string(&old).unwrap(),
                "{}",
                typed.kind()
            );
            // And back: the same variant from the stored JSON.
            assert_eq!(EventPayload::parse(typed.kind(), &old).unwrap(), typed);
            // The serde form is the event's shape.
            let tagged = serde_json::to_value(&typed).unwrap();
            assert_eq!(tagged["kind"], typed.kind().as_str());
            assert_eq!(tagged["payload"], new);
        }
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_an_error_naming_the_field() {
        let err = EventPayload::parse(EventKind::RunPaused, &json!({"at": "queue"})).unwrap_err();
        assert!(err.to_string().contains("run_id"), "{err}");
    }
}
