//! `summary.json` (SPEC §7): the one-glance outcome of a run, rewritten atomically at every
//! run end so scripts can read it without parsing the report.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use crate::completion::CompletionMode;
use crate::domain::{ExitReason, RunId, RunStatus, UnixMs};

/// The contents of `summary.json`. The keys of SPEC §7 come first, in that order, then the
/// keys this project adds (status, name, failure, tasks, branches, cost, tokens); absent values
/// are written as `null`, never left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// The run.
    pub(crate) run_id: RunId,
    /// When the run started.
    pub(crate) start_ms: UnixMs,
    /// When the run ended.
    pub(crate) end_ms: UnixMs,
    /// `end_ms - start_ms`.
    pub(crate) total_duration_ms: u64,
    /// Iterations started.
    pub(crate) iterations_run: u32,
    /// The iteration in which completion was detected; `null` if the run did not complete.
    pub(crate) completed_iteration: Option<u32>,
    /// Mean duration of the agent steps; 0 when none ran.
    pub(crate) avg_duration_ms: u64,
    /// Exit code of the last agent step; `null` when no agent step ran.
    pub(crate) last_exit_code: Option<i32>,
    /// The completion mode that accepted the token; `null` if the run did not complete.
    pub(crate) completion_mode: Option<CompletionMode>,
    /// The agent model.
    pub(crate) model: String,
    /// Why the run ended, e.g. `complete_plan`.
    pub(crate) exit_reason: ExitReason,
    /// Path of `run.log`.
    pub(crate) run_log: String,
    /// Path of `report.tsv`.
    pub(crate) run_report: String,
    /// Path of `prompt.txt`.
    pub(crate) prompt_snapshot: String,
    /// Path of the last `iter-<slug>.tail.txt`; `null` when no agent step ran.
    pub(crate) last_iteration_tail: Option<String>,
    /// Path of the last `iter-<slug>.log`; `null` when no agent step ran.
    pub(crate) last_iteration_log: Option<String>,
    /// The run's status at its end (`completed`, `failed`, `canceled`).
    pub(crate) status: RunStatus,
    /// The run's name.
    pub(crate) name: String,
    /// Why the run failed (the run's `failure` text); `null` unless it failed.
    pub(crate) failure: Option<String>,
    /// The merge into the target waits (the reason); `null` when it does not.
    pub(crate) merge_pending: Option<String>,
    /// Ticked tasks of the plan at the end.
    pub(crate) tasks_done: u32,
    /// All tasks of the plan at the end.
    pub(crate) tasks_total: u32,
    /// The branch the run worked on.
    pub(crate) run_branch: String,
    /// The branch the run started from.
    pub(crate) base_branch: String,
    /// The branch the run merges into; `null` when it does not merge.
    pub(crate) target_branch: Option<String>,
    /// Sum of the agent steps' reported cost in USD; `null` when none reported one.
    pub(crate) cost_usd: Option<f64>,
    /// Sum of the agent steps' reported input tokens.
    pub(crate) input_tokens: u64,
    /// Sum of the agent steps' reported output tokens.
    pub(crate) output_tokens: u64,
    /// Sum of the agent steps' reported cache-read input tokens.
    pub(crate) cache_read_input_tokens: u64,
    /// Sum of the agent steps' reported cache-creation input tokens.
    pub(crate) cache_creation_input_tokens: u64,
    /// Spent and limit of each budget (SPEC §15).
    #[serde(default)]
    pub(crate) budget: crate::engine::BudgetStatus,
}

/// Writes `summary` as pretty JSON to `path`, atomically (see [`write_atomic`]).
pub(crate) fn write_summary(path: &Path, summary: &Summary) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(summary).map_err(io::Error::other)?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Reads a `summary.json` back.
#[cfg(test)]
pub(crate) fn read_summary(path: &Path) -> io::Result<Summary> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_KEYS: [&str; 16] = [
        "run_id",
        "start_ms",
        "end_ms",
        "total_duration_ms",
        "iterations_run",
        "completed_iteration",
        "avg_duration_ms",
        "last_exit_code",
        "completion_mode",
        "model",
        "exit_reason",
        "run_log",
        "run_report",
        "prompt_snapshot",
        "last_iteration_tail",
        "last_iteration_log",
    ];

    fn unfinished() -> Summary {
        Summary {
            run_id: RunId::new(),
            start_ms: 1_000,
            end_ms: 4_500,
            total_duration_ms: 3_500,
            iterations_run: 0,
            completed_iteration: None,
            avg_duration_ms: 0,
            last_exit_code: None,
            completion_mode: None,
            model: "opus".into(),
            exit_reason: ExitReason::Canceled,
            run_log: "/r/run.log".into(),
            run_report: "/r/report.tsv".into(),
            prompt_snapshot: "/r/prompt.txt".into(),
            last_iteration_tail: None,
            last_iteration_log: None,
            status: RunStatus::Canceled,
            name: "add-login".into(),
            failure: None,
            merge_pending: None,
            tasks_done: 1,
            tasks_total: 3,
            run_branch: "run/add-login-1".into(),
            base_branch: "main".into(),
            target_branch: Some("agent/add-login".into()),
            cost_usd: None,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            budget: crate::engine::BudgetStatus::default(),
        }
    }

    const ADDED_KEYS: [&str; 15] = [
        "status",
        "name",
        "failure",
        "merge_pending",
        "tasks_done",
        "tasks_total",
        "run_branch",
        "base_branch",
        "target_branch",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "budget",
    ];

    #[test]
    fn keys_are_the_spec_keys_in_order_then_the_added_ones_with_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        let s = unfinished();
        write_summary(&p, &s).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let obj = value.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut expected = SPEC_KEYS.to_vec();
        expected.extend(ADDED_KEYS);
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        for k in [
            "completed_iteration",
            "completion_mode",
            "last_iteration_tail",
            "last_iteration_log",
            "last_exit_code",
            "failure",
            "merge_pending",
            "cost_usd",
        ] {
            assert!(obj[k].is_null(), "{k} should be null");
        }
        assert_eq!(obj["status"], "CANCELED");
        assert_eq!(obj["tasks_total"], 3);
        assert_eq!(obj["exit_reason"], "canceled");
        assert_eq!(obj["run_id"], s.run_id.to_string());
        // The file lists the SPEC keys first, in SPEC order, then the added ones.
        let positions: Vec<usize> = SPEC_KEYS
            .iter()
            .chain(ADDED_KEYS.iter())
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(read_summary(&p).unwrap(), s);
    }

    #[test]
    fn a_completed_summary_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        let s = Summary {
            iterations_run: 4,
            completed_iteration: Some(4),
            avg_duration_ms: 1200,
            last_exit_code: Some(0),
            completion_mode: Some(CompletionMode::Trailing),
            exit_reason: ExitReason::CompletePlan,
            last_iteration_tail: Some("/r/iter-04.tail.txt".into()),
            last_iteration_log: Some("/r/iter-04.log".into()),
            status: RunStatus::Completed,
            tasks_done: 3,
            cost_usd: Some(0.25),
            input_tokens: 100,
            output_tokens: 20,
            ..unfinished()
        };
        write_summary(&p, &s).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(value["completion_mode"], "trailing");
        assert_eq!(value["exit_reason"], "complete_plan");
        assert_eq!(value["completed_iteration"], 4);
        assert_eq!(value["status"], "COMPLETED");
        assert_eq!(value["cost_usd"], 0.25);
        assert_eq!(read_summary(&p).unwrap(), s);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary files may remain");
    }

    #[test]
    fn reading_garbage_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        std::fs::write(&p, "{").unwrap();
        assert_eq!(
            read_summary(&p).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
