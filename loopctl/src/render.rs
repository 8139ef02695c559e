//! Rendering: aligned tables, durations, colour (only on a terminal). Pure functions of the
//! wire types so the output is snapshot-tested.

use std::io::IsTerminal;

use loop_engine::domain::RunStatus;
use loop_http::api::{ArtifactResource, PostmortemResource, RunResource, StepResource};

/// How amounts of money are shown: as the agent reported them, or labelled as not billed
/// (`loopctl demo`: its scripted model answers for free, whatever the CLI computes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Costs {
    /// What the agent reported, as it is.
    #[default]
    Reported,
    /// Computed by the CLI for a scripted model: nothing was billed.
    Scripted,
}

impl Costs {
    /// `$0.1234`, or `$0.1234 (scripted model, nothing billed)`.
    pub(crate) fn show(self, usd: f64) -> String {
        match self {
            Self::Reported => format!("${usd:.4}"),
            Self::Scripted => format!("${usd:.4} (scripted model, nothing billed)"),
        }
    }
}

/// Whether to colour stdout.
pub(crate) fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `status` coloured by meaning (when `colour`).
pub(crate) fn status(s: RunStatus, colour: bool) -> String {
    if !colour {
        return s.to_string();
    }
    let code = match s {
        RunStatus::Completed => "32",
        RunStatus::Failed => "31",
        RunStatus::Canceled => "33",
        RunStatus::Running => "36",
        RunStatus::Paused => "35",
        RunStatus::Pending => "2",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// Left-aligned columns separated by two spaces (ANSI colour codes do not count as width).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let visible = |s: &str| -> usize {
        let mut n = 0;
        let mut in_escape = false;
        for c in s.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible(cell));
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(visible(cell)) + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `1h02m`, `3m07s`, `12s`, `450ms`.
pub(crate) fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// The `list` table.
pub(crate) fn runs_table(runs: &[RunResource], colour: bool) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                status(r.status, colour),
                format!("{}/{}", r.tasks_done, r.tasks_total),
                r.iterations_run.to_string(),
                r.exit_reason.clone().unwrap_or_else(|| "-".into()),
                r.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "STATUS", "TASKS", "ITER", "REASON", "CREATED"],
        &rows,
    )
}

fn usage_text(step: &StepResource, costs: Costs) -> String {
    let Some(u) = &step.usage else {
        return "-".into();
    };
    let mut parts = Vec::new();
    if let Some(t) = u.turns {
        parts.push(format!("{t} turns"));
    }
    if u.input_tokens.is_some() || u.output_tokens.is_some() {
        parts.push(format!(
            "{} in / {} out tokens",
            u.input_tokens.unwrap_or(0),
            u.output_tokens.unwrap_or(0)
        ));
    }
    if let Some(c) = u.cost_usd {
        parts.push(costs.show(c));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// What the agent's cgroup measured: CPU time, peak memory, peak processes, a limit hit.
fn resources_text(step: &StepResource) -> String {
    let Some(r) = &step.resources else {
        return "-".into();
    };
    let mut parts = vec![format!("cpu {}", cpu_text(r.cpu_usec))];
    if let Some(b) = r.memory_peak_bytes {
        parts.push(format!("mem {:.1} MiB", b as f64 / (1024.0 * 1024.0)));
    }
    if let Some(p) = r.pids_peak {
        parts.push(format!("{p} procs"));
    }
    if let Some(l) = &r.limit_hit {
        parts.push(format!("hit {l}"));
    }
    parts.join(", ")
}

fn cpu_text(usec: u64) -> String {
    if usec >= 1_000_000 {
        format!("{:.2} s", usec as f64 / 1e6)
    } else {
        format!("{:.1} ms", usec as f64 / 1e3)
    }
}

/// The `inspect` view: the run's state, its steps, its artifacts.
/// The run's MERGE_PENDING in one line (`the merge into <target> waits: <reason>`): a run that
/// completed with its merge step succeeded with a reason (the engine gives a merge step a
/// reason only when the merge waits for the user's checkout).
pub(crate) fn merge_pending(run: &RunResource) -> Option<String> {
    let step = run.last_step.as_ref()?;
    if run.status != RunStatus::Completed || step.phase != "merge" || step.status != "SUCCEEDED" {
        return None;
    }
    let reason = step.reason.as_deref()?;
    Some(format!(
        "the merge into {} waits: {reason}",
        run.merge_target_branch.as_deref().unwrap_or("the target")
    ))
}

/// The postmortem part of `inspect`: where the analysis is, how it ended, and the first
/// lines of its summary; `None` when the run has no postmortem.
pub(crate) fn postmortem_section(pm: &PostmortemResource) -> Option<String> {
    if pm.files.is_empty() && !pm.running {
        return None;
    }
    let state = if pm.running {
        "under way".to_owned()
    } else {
        pm.last_message.clone().unwrap_or_else(|| "-".into())
    };
    let mut out = format!("postmortem: {} ({state})\n", pm.dir.display());
    if let Some(head) = &pm.summary_head {
        for line in head.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str(&format!(
            "  (all of it: {})\n",
            pm.dir.join("summary.md").display()
        ));
    }
    Some(out)
}

pub(crate) fn inspect(
    run: &RunResource,
    steps: &[StepResource],
    artifacts: &[ArtifactResource],
    colour: bool,
    costs: Costs,
) -> String {
    let mut kv: Vec<(&str, String)> = vec![
        ("id", run.id.to_string()),
        ("name", format!("{} ({})", run.name, run.name_source)),
        ("status", status(run.status, colour)),
        (
            "exit reason",
            run.exit_reason.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    if let Ok(config) = loop_engine::config::Config::from_json(&run.config) {
        kv.push(("agent", config.agent_summary()));
    }
    if let Some(f) = &run.failure {
        kv.push(("failure", f.clone()));
    }
    let pending = merge_pending(run);
    if let Some(p) = &pending {
        kv.push(("merge", p.clone()));
    }
    kv.extend([
        (
            "tasks",
            format!("{}/{} done", run.tasks_done, run.tasks_total),
        ),
        ("iterations", run.iterations_run.to_string()),
        ("workspace", run.workspace_root.display().to_string()),
        ("spec", run.spec_path.display().to_string()),
        ("plan", run.plan_path.display().to_string()),
        (
            "branches",
            format!(
                "{} from {} -> {} ({})",
                if run.run_branch.is_empty() {
                    "-"
                } else {
                    &run.run_branch
                },
                run.base_branch,
                run.merge_target_branch.as_deref().unwrap_or("-"),
                run.merge_strategy
            ),
        ),
        (
            "worktree",
            if run.worktree_path.as_os_str().is_empty() {
                "-".into()
            } else {
                run.worktree_path.display().to_string()
            },
        ),
        ("created", run.created_at.clone()),
        ("updated", run.updated_at.clone()),
    ]);
    if let Some(b) = &run.budget {
        kv.push(("budget", b.text()));
    }
    if run.status.is_terminal() {
        let mut review = run.review_status.to_string();
        if let Some(c) = &run.merge_commit {
            review.push_str(&format!(" at {c}"));
        }
        if let Some(u) = &run.pr_url {
            review.push_str(&format!(" {u}"));
        }
        if let Some(at) = &run.review_action_at {
            review.push_str(&format!(" ({at})"));
        }
        kv.push(("review", review));
    }
    if let Some(s) = &run.last_step {
        // A pending merge's reason is on its own line already.
        let shown_reason = s.reason.as_deref().filter(|_| pending.is_none());
        kv.push((
            "last step",
            format!(
                "#{} {} {} exit {}{}",
                s.seq,
                // The label and the phase once when they are the same word (`merge`).
                if s.label.is_empty() || s.label == s.phase {
                    s.phase.clone()
                } else {
                    format!("{} {}", s.label, s.phase)
                },
                s.status,
                s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                // The run's failure already says it: the reason is shown once.
                shown_reason
                    .filter(|r| !run.failure.as_deref().is_some_and(|f| f.contains(r)))
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let width = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &kv {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    if !steps.is_empty() {
        out.push_str("\nsteps:\n");
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                vec![
                    s.seq.to_string(),
                    s.label.clone(),
                    s.phase.clone(),
                    s.status.clone(),
                    s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                    s.duration_ms.map_or_else(|| "-".into(), duration_ms),
                    usage_text(s, costs),
                    resources_text(s),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "#",
                "LABEL",
                "PHASE",
                "STATUS",
                "EXIT",
                "TIME",
                "USAGE",
                "RESOURCES",
            ],
            &rows,
        ));
    }
    let local: Vec<&ArtifactResource> = artifacts
        .iter()
        .filter(|a| a.location == "workspace")
        .collect();
    if !local.is_empty() {
        out.push_str("\nartifacts:\n");
        let rows: Vec<Vec<String>> = local
            .iter()
            .map(|a| vec![a.kind.clone(), a.path.display().to_string()])
            .collect();
        out.push_str(&table(&["KIND", "PATH"], &rows));
        if let Some(g) = artifacts.iter().find(|a| a.location == "global")
            && let Some(dir) = g.path.parent()
        {
            out.push_str(&format!("mirror: {}\n", dir.display()));
        }
    }
    out
}

/// The one-line status of `tail`: status, the current step (its label and phase, once when
/// they are the same word), tasks, elapsed time and the cost of the steps so far.
pub(crate) fn status_line(
    run: &RunResource,
    cost_usd: Option<f64>,
    costs: Costs,
    elapsed_ms: i64,
    colour: bool,
) -> String {
    let step = match &run.last_step {
        None => "-".to_owned(),
        Some(s) if s.label.is_empty() || s.label == s.phase => s.phase.clone(),
        Some(s) => format!("iteration {} {}", s.label, s.phase),
    };
    let cost = match run.budget.as_ref().filter(|b| b.has_limit()) {
        // With a budget set, spent against limit (SPEC §15).
        Some(b) => format!(" | {}", b.text()),
        None => cost_usd
            .map(|c| format!(" | {}", costs.show(c)))
            .unwrap_or_default(),
    };
    format!(
        "[{}] {step} | tasks {}/{} | {}{cost}",
        status(run.status, colour),
        run.tasks_done,
        run.tasks_total,
        duration_ms(elapsed_ms)
    )
}

/// Turns the agent's stream-json output into readable lines: assistant text, one line per tool
/// call and tool result, the final result with turns and cost. Lines that are not JSON are
/// kept as they are. `feed` takes raw text in any chunking and returns what is complete.
#[derive(Debug, Default)]
pub(crate) struct AgentView {
    partial: String,
    costs: Costs,
}

fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

impl AgentView {
    /// A view that shows costs as `costs` says.
    pub(crate) fn new(costs: Costs) -> Self {
        Self {
            partial: String::new(),
            costs,
        }
    }

    /// Renders the complete lines in `chunk` (and any earlier partial line).
    pub(crate) fn feed(&mut self, chunk: &str) -> String {
        self.partial.push_str(chunk);
        let mut out = String::new();
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            out.push_str(&Self::line_with(
                line.trim_end_matches(['\n', '\r']),
                self.costs,
            ));
        }
        out
    }

    /// Renders one line of agent output (costs as reported).
    pub(crate) fn line(line: &str) -> String {
        Self::line_with(line, Costs::Reported)
    }

    /// Renders one line of agent output, costs shown as `costs` says.
    pub(crate) fn line_with(line: &str, costs: Costs) -> String {
        // The engine's lenient parser: a lone surrogate or invalid UTF-8 in a line is
        // repaired, not shown as raw JSON.
        let parsed = if line.trim_start().starts_with('{') {
            loop_engine::impls::stream_json::parse_value(line.trim().as_bytes())
        } else {
            None
        };
        let Some(v) = parsed else {
            return format!("{line}\n");
        };
        let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let mut out = String::new();
        match kind {
            "system" => match v.get("subtype").and_then(|s| s.as_str()) {
                Some("init") => out.push_str(&format!(
                    "· agent started (model {})\n",
                    v.get("model").and_then(|m| m.as_str()).unwrap_or("?")
                )),
                Some("api_retry") => out.push_str(&format!(
                    "· API retry {} of {} after {} ({} ms)\n",
                    v.get("attempt")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    v.get("max_retries")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    v.get("error").and_then(|e| e.as_str()).unwrap_or("error"),
                    v.get("retry_delay_ms")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )),
                _ => {}
            },
            "assistant" | "user" => {
                let blocks = v
                    .pointer("/message/content")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                for b in blocks {
                    match b.get("type").and_then(|t| t.as_str()) {
                        Some("text") => {
                            let text = b.get("text").and_then(|t| t.as_str()).unwrap_or("");
                            if !text.trim().is_empty() {
                                out.push_str(text.trim_end());
                                out.push('\n');
                            }
                        }
                        Some("tool_use") => {
                            let name = b.get("name").and_then(|n| n.as_str()).unwrap_or("tool");
                            let input = b.get("input").cloned().unwrap_or_default();
                            let what = input
                                .get("description")
                                .or_else(|| input.get("command"))
                                .or_else(|| input.get("file_path"))
                                .and_then(|d| d.as_str())
                                .map(|d| first_line(d, 100))
                                .unwrap_or_default();
                            out.push_str(&format!("→ {name}: {what}\n"));
                        }
                        Some("tool_result") => {
                            let content = match b.get("content") {
                                Some(serde_json::Value::String(s)) => s.clone(),
                                Some(serde_json::Value::Array(parts)) => parts
                                    .iter()
                                    .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                                _ => String::new(),
                            };
                            let n = content.lines().count();
                            out.push_str(&format!(
                                "← {}{}\n",
                                first_line(&content, 100),
                                if n > 1 {
                                    format!(" (+{} lines)", n - 1)
                                } else {
                                    String::new()
                                }
                            ));
                        }
                        _ => {}
                    }
                }
            }
            "result" if v.get("status").is_some() => out.push_str(&gemini_result(&v)),
            "init" => out.push_str(&format!(
                "· agent started (model {})\n",
                v.get("model").and_then(|m| m.as_str()).unwrap_or("?")
            )),
            "message" => {
                // The Gemini CLI: the prompt comes back as a user message, answers as deltas.
                let text = v.get("content").and_then(|c| c.as_str()).unwrap_or("");
                if v.get("role").and_then(|r| r.as_str()) == Some("assistant")
                    && !text.trim().is_empty()
                {
                    out.push_str(text.trim_end());
                    out.push('\n');
                }
            }
            "tool_use" => {
                let name = v
                    .get("tool_name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("tool");
                let input = v.get("parameters").cloned().unwrap_or_default();
                out.push_str(&format!("→ {name}: {}\n", tool_what(&input)));
            }
            "tool_result" => {
                let text = v
                    .get("output")
                    .or_else(|| v.pointer("/error/message"))
                    .and_then(|o| o.as_str())
                    .unwrap_or("");
                out.push_str(&result_line(text));
            }
            "error" => out.push_str(&format!(
                "· {}\n",
                first_line(
                    v.get("message").and_then(|m| m.as_str()).unwrap_or("error"),
                    200
                )
            )),
            "thread.started" => out.push_str("· agent started (Codex)\n"),
            "turn.started" | "item.started" | "item.updated" => {}
            "item.completed" => out.push_str(&codex_item(v.get("item").unwrap_or_default())),
            "turn.completed" => out.push_str(&format!(
                "✓ done ({} input / {} output tokens)\n",
                v.pointer("/usage/input_tokens")
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "?".into()),
                v.pointer("/usage/output_tokens")
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "?".into()),
            )),
            "turn.failed" => out.push_str(&format!(
                "✗ failed: {}\n",
                first_line(
                    v.pointer("/error/message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("error"),
                    200
                )
            )),
            "result" => {
                let err = v.get("is_error").and_then(|e| e.as_bool()).unwrap_or(false);
                out.push_str(&format!(
                    "{} done in {} turns{}{}\n",
                    if err { "✗" } else { "✓" },
                    v.get("num_turns")
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "?".into()),
                    v.get("total_cost_usd")
                        .and_then(|c| c.as_f64())
                        .map(|c| format!(", {}", costs.show(c)))
                        .unwrap_or_default(),
                    v.get("api_error_status")
                        .and_then(|s| s.as_u64())
                        .map(|s| format!(", API error {s}"))
                        .unwrap_or_default(),
                ));
            }
            _ => out.push_str(&format!("{line}\n")),
        }
        out
    }
}

/// What a tool call is about: its description, command or file.
fn tool_what(input: &serde_json::Value) -> String {
    input
        .get("description")
        .or_else(|| input.get("command"))
        .or_else(|| input.get("cmd"))
        .or_else(|| input.get("file_path"))
        .and_then(|d| d.as_str())
        .map(|d| first_line(d, 100))
        .unwrap_or_default()
}

/// `← <first line> (+N lines)` for a tool's output.
fn result_line(content: &str) -> String {
    let n = content.lines().count();
    format!(
        "← {}{}\n",
        first_line(content, 100),
        if n > 1 {
            format!(" (+{} lines)", n - 1)
        } else {
            String::new()
        }
    )
}

/// One finished item of the Codex CLI's `--json` stream.
fn codex_item(item: &serde_json::Value) -> String {
    let text = |key: &str| item.get(key).and_then(|t| t.as_str()).unwrap_or("");
    match item.get("type").and_then(|t| t.as_str()) {
        Some("agent_message") if !text("text").trim().is_empty() => {
            format!("{}\n", text("text").trim_end())
        }
        Some("command_execution") => {
            // Codex shows the command as `/bin/bash -lc "<script>"`: the script is what ran.
            let command = text("command");
            let script = command
                .strip_prefix("/bin/bash -lc ")
                .or_else(|| command.strip_prefix("bash -lc "))
                .unwrap_or(command)
                .trim_matches('"');
            format!(
                "→ shell: {}\n{}",
                first_line(script, 100),
                result_line(text("aggregated_output"))
            )
        }
        Some("file_change") => {
            let paths: Vec<&str> = item
                .get("changes")
                .and_then(|c| c.as_array())
                .map(|c| {
                    c.iter()
                        .filter_map(|x| x.get("path").and_then(|p| p.as_str()))
                        .collect()
                })
                .unwrap_or_default();
            format!("→ edit: {}\n", paths.join(", "))
        }
        Some("error") => format!("· {}\n", first_line(text("message"), 200)),
        _ => String::new(),
    }
}

/// The Gemini CLI's final `result` line.
fn gemini_result(v: &serde_json::Value) -> String {
    let ok = v.get("status").and_then(|s| s.as_str()) == Some("success");
    let tokens = |k: &str| {
        v.pointer(&format!("/stats/{k}"))
            .map(ToString::to_string)
            .unwrap_or_else(|| "?".into())
    };
    if ok {
        format!(
            "✓ done ({} input / {} output tokens, {} tool calls)\n",
            tokens("input_tokens"),
            tokens("output_tokens"),
            tokens("tool_calls")
        )
    } else {
        format!(
            "✗ failed: {}\n",
            first_line(
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("error"),
                200
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_engine::domain::{Run, Step, StepId, StepPhase, StepStatus};

    fn sample_run() -> Run {
        use loop_engine::domain::{MergeStrategy, NameSource, RunId, RunStatus};
        Run {
            id: RunId::new(),
            name: "widget".into(),
            name_source: NameSource::SpecSlug,
            status: RunStatus::Failed,
            exit_reason: None,
            failure: None,
            workspace_root: "/w".into(),
            spec_path: "/w/specs/widget.md".into(),
            plan_path: "/w/specs/planning/widget-plan.md".into(),
            base_branch: "main".into(),
            run_branch: "run/widget".into(),
            merge_target_branch: None,
            merge_strategy: MergeStrategy::Squash,
            worktree_path: "/w.run-widget".into(),
            config: serde_json::json!({}),
            iterations_run: 1,
            tasks_done: 0,
            tasks_total: 1,
            created_at: 0,
            updated_at: 0,
            worker_id: None,
            lease_expires_at: None,
            lease_epoch: 0,
            review_status: loop_engine::domain::ReviewStatus::Pending,
            review_action_at: None,
            merge_commit: None,
            pr_url: None,
        }
    }

    #[test]
    fn codex_and_gemini_lines_are_rendered() {
        let codex = [
            r#"{"type":"thread.started","thread_id":"t"}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.completed","item":{"type":"command_execution","command":"/bin/bash -lc \"git status\"","aggregated_output":"clean\n","exit_code":0}}"#,
            r#"{"type":"item.completed","item":{"type":"agent_message","text":"Completed task 1."}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":5}}"#,
            r#"{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized"}}"#,
        ];
        let out: String = codex.iter().map(|l| AgentView::line(l)).collect();
        assert_eq!(
            out,
            "· agent started (Codex)\n→ shell: git status\n← clean\nCompleted task 1.\n✓ done (10 input / 5 output tokens)\n✗ failed: unexpected status 401 Unauthorized\n"
        );
        let gemini = [
            r#"{"type":"init","model":"gemini-2.5-pro"}"#,
            r#"{"type":"message","role":"user","content":"do it"}"#,
            r#"{"type":"tool_use","tool_name":"run_shell_command","parameters":{"command":"ls"}}"#,
            r#"{"type":"tool_result","status":"success","output":"a\nb"}"#,
            r#"{"type":"message","role":"assistant","content":"Done.","delta":true}"#,
            r#"{"type":"result","status":"success","stats":{"input_tokens":7,"output_tokens":3,"tool_calls":1}}"#,
            r#"{"type":"result","status":"error","error":{"message":"[API Error: 401]"}}"#,
        ];
        let out: String = gemini.iter().map(|l| AgentView::line(l)).collect();
        assert_eq!(
            out,
            "· agent started (model gemini-2.5-pro)\n→ run_shell_command: ls\n← a (+1 lines)\nDone.\n✓ done (7 input / 3 output tokens, 1 tool calls)\n✗ failed: [API Error: 401]\n"
        );
    }

    #[test]
    fn inspect_shows_a_failure_once() {
        use loop_engine::domain::RunStatus;
        let reason = "loopd runs as root (IS_SANDBOX is `yes`): set IS_SANDBOX=1";
        let run = Run {
            failure: Some(format!("agent step failed: {reason}")),
            ..sample_run()
        };
        let step = Step {
            id: StepId::new(),
            run_id: run.id,
            seq: 1,
            iteration: 1,
            label: "1".into(),
            phase: StepPhase::Implementation,
            status: StepStatus::Failed,
            attempt: 1,
            started_at: Some(0),
            ended_at: Some(0),
            exit_code: Some(1),
            reason: Some(reason.to_owned()),
            prompt_path: None,
            output_path: None,
            head_before: None,
            head_after: None,
            agent_pid: None,
            agent_start_time: None,
            usage: None,
            resources: None,
        };
        let text = inspect(
            &loop_http::api::RunResource::new(&run, Some(&step)),
            &[],
            &[],
            false,
            Costs::Reported,
        );
        assert_eq!(text.matches("IS_SANDBOX=1").count(), 1, "{text}");
        assert!(text.contains("last step"), "{text}");
        assert!(!text.contains("waits"), "{text}");

        // Spent against limit (SPEC §15): in inspect and in tail's status line.
        let mut with_budget = loop_http::api::RunResource::new(&run, Some(&step));
        with_budget.budget = Some(loop_engine::engine::BudgetStatus {
            cost_usd: 0.5,
            tokens: 900,
            wall_sec: 12,
            max_cost_usd: Some(0.25),
            ..loop_engine::engine::BudgetStatus::default()
        });
        let text = inspect(&with_budget, &[], &[], false, Costs::Reported);
        assert!(
            text.contains("cost $0.5000/$0.2500, tokens 900/-, wall 12 s/-"),
            "{text}"
        );
        let line = status_line(&with_budget, Some(0.5), Costs::Reported, 1000, false);
        assert!(line.contains("cost $0.5000/$0.2500"), "{line}");

        // A completed run whose merge waits says so in one line, once.
        let why = "main is checked out in /w with uncommitted changes (specs/widget.md)";
        let done = Run {
            status: RunStatus::Completed,
            failure: None,
            merge_target_branch: Some("main".into()),
            ..run
        };
        let merge = Step {
            label: "merge".into(),
            phase: StepPhase::Merge,
            status: StepStatus::Succeeded,
            exit_code: Some(0),
            reason: Some(why.to_owned()),
            ..step
        };
        let resource = loop_http::api::RunResource::new(&done, Some(&merge));
        let line = format!("the merge into main waits: {why}");
        assert_eq!(merge_pending(&resource).as_deref(), Some(line.as_str()));
        let text = inspect(&resource, &[], &[], false, Costs::Reported);
        assert_eq!(text.matches(why).count(), 1, "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("merge ") && l.ends_with(&line)),
            "{text}"
        );
        // A merge that landed waits for nothing.
        let landed = Step {
            reason: None,
            ..merge
        };
        assert_eq!(
            merge_pending(&loop_http::api::RunResource::new(&done, Some(&landed))),
            None
        );
    }

    #[test]
    fn inspect_shows_what_the_agent_cgroup_measured() {
        let run = sample_run();
        let mut step = Step {
            id: StepId::new(),
            run_id: run.id,
            seq: 1,
            iteration: 1,
            label: "1".into(),
            phase: StepPhase::Implementation,
            status: StepStatus::Failed,
            attempt: 1,
            started_at: Some(0),
            ended_at: Some(10),
            exit_code: Some(2),
            reason: None,
            prompt_path: None,
            output_path: None,
            head_before: None,
            head_after: None,
            agent_pid: None,
            agent_start_time: None,
            usage: None,
            resources: Some(loop_engine::domain::AgentResources {
                cpu_usec: 1_500_000,
                memory_peak_bytes: Some(3 << 20),
                pids_peak: Some(12),
                limit_hit: Some("agent_pids_max".into()),
            }),
        };
        let with = StepResource::from(&step);
        step.resources = None;
        let without = StepResource::from(&step);
        let text = inspect(
            &loop_http::api::RunResource::new(&run, Some(&step)),
            &[with, without],
            &[],
            false,
            Costs::Reported,
        );
        assert!(text.contains("RESOURCES"), "{text}");
        assert!(
            text.contains("cpu 1.50 s, mem 3.0 MiB, 12 procs, hit agent_pids_max"),
            "{text}"
        );
    }

    #[test]
    fn stream_json_becomes_readable_lines() {
        let mut v = AgentView::default();
        let init = r#"{"type":"system","subtype":"init","model":"opus"}"#;
        let tool = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"git commit -m x\nmore","description":"commit the task"}}]}}"#;
        let result_block = r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"line one\nline two\nline three"}]}}"#;
        let text = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Completed X. 2 tasks remain."}]}}"#;
        let done = r#"{"type":"result","is_error":false,"num_turns":3,"total_cost_usd":0.0123,"result":"ok"}"#;
        let all = format!("{init}\n{tool}\n{result_block}\n{text}\n{done}\nplain text line\n");
        // Arbitrary chunking must not matter.
        let (a, b) = all.split_at(37);
        let rendered = v.feed(a) + &v.feed(b);
        assert_eq!(
            rendered,
            "· agent started (model opus)\n\
             → Bash: commit the task\n\
             ← line one (+2 lines)\n\
             Completed X. 2 tasks remain.\n\
             ✓ done in 3 turns, $0.0123\n\
             plain text line\n"
        );
    }

    #[test]
    fn api_errors_and_retries_are_shown() {
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":500,"error":"overloaded"}"#;
        assert_eq!(
            AgentView::line(retry),
            "· API retry 1 of 2 after overloaded (500 ms)\n"
        );
        let failed = r#"{"type":"result","is_error":true,"num_turns":1,"api_error_status":401}"#;
        assert_eq!(
            AgentView::line(failed),
            "✗ done in 1 turns, API error 401\n"
        );
    }

    #[test]
    fn lone_surrogates_are_rendered_not_printed_as_json() {
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"bad \udcff char"}]}}"#;
        assert_eq!(AgentView::line(line), "bad \u{fffd} char\n");
    }

    /// The status line names a step once when its label is its phase (`naming`, `merge`),
    /// and the demo's costs say that nothing was billed (issue 13 item 9).
    #[test]
    fn status_lines_name_the_step_once_and_label_scripted_costs() {
        use loop_engine::domain::{Run, Step, StepId, StepPhase, StepStatus};
        let run = Run {
            name: "greeter".into(),
            status: RunStatus::Running,
            spec_path: "/w/specs/greeter.md".into(),
            plan_path: "/w/specs/planning/greeter-plan.md".into(),
            run_branch: "run/greeter".into(),
            merge_target_branch: Some("main".into()),
            worktree_path: "/w.run-greeter".into(),
            iterations_run: 2,
            tasks_done: 1,
            tasks_total: 3,
            ..sample_run()
        };
        let step = |label: &str, phase: StepPhase| Step {
            id: StepId::new(),
            run_id: run.id,
            seq: 1,
            iteration: 2,
            label: label.into(),
            phase,
            status: StepStatus::InProgress,
            attempt: 1,
            started_at: Some(0),
            ended_at: None,
            exit_code: None,
            reason: None,
            prompt_path: None,
            output_path: None,
            head_before: None,
            head_after: None,
            agent_pid: None,
            agent_start_time: None,
            usage: None,
            resources: None,
        };
        let line = |s: Step, costs: Costs| {
            status_line(
                &RunResource::new(&run, Some(&s)),
                Some(0.1234),
                costs,
                3000,
                false,
            )
        };
        assert_eq!(
            line(step("naming", StepPhase::Naming), Costs::Reported),
            "[RUNNING] naming | tasks 1/3 | 3s | $0.1234"
        );
        assert_eq!(
            line(step("merge", StepPhase::Merge), Costs::Reported),
            "[RUNNING] merge | tasks 1/3 | 3s | $0.1234"
        );
        assert_eq!(
            line(step("2", StepPhase::Implementation), Costs::Scripted),
            "[RUNNING] iteration 2 implementation | tasks 1/3 | 3s | $0.1234 (scripted model, nothing billed)"
        );
        let done = r#"{"type":"result","is_error":false,"num_turns":2,"total_cost_usd":0.12,"result":"ok"}"#;
        let mut view = AgentView::new(Costs::Scripted);
        assert_eq!(
            view.feed(&format!("{done}\n")),
            "✓ done in 2 turns, $0.1200 (scripted model, nothing billed)\n"
        );
        assert_eq!(AgentView::line(done), "✓ done in 2 turns, $0.1200\n");
    }

    #[test]
    fn tables_align_and_status_lines_read_well() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
        assert_eq!(duration_ms(450), "450ms");
        assert_eq!(duration_ms(187_000), "3m07s");
        assert_eq!(duration_ms(3_720_000), "1h02m");
    }
}
