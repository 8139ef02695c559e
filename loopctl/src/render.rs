//! Rendering: aligned tables, durations, colour (only on a terminal). Pure functions of the
//! wire types so the output is snapshot-tested.

use std::io::IsTerminal;

use loop_engine::domain::RunStatus;
use loop_http::api::{ArtifactResource, RunResource, StepResource};

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

fn usage_text(step: &StepResource) -> String {
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
        parts.push(format!("${c:.4}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The `inspect` view: the run's state, its steps, its artifacts.
pub(crate) fn inspect(
    run: &RunResource,
    steps: &[StepResource],
    artifacts: &[ArtifactResource],
    colour: bool,
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
    if let Some(f) = &run.failure {
        kv.push(("failure", f.clone()));
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
    if let Some(s) = &run.last_step {
        kv.push((
            "last step",
            format!(
                "#{} {} {} {} exit {}{}",
                s.seq,
                s.label,
                s.phase,
                s.status,
                s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                s.reason
                    .as_deref()
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
                    usage_text(s),
                ]
            })
            .collect();
        out.push_str(&table(
            &["#", "LABEL", "PHASE", "STATUS", "EXIT", "TIME", "USAGE"],
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

/// The one-line status of `tail`.
pub(crate) fn status_line(
    run: &RunResource,
    iteration: &str,
    phase: &str,
    elapsed_ms: i64,
    colour: bool,
) -> String {
    format!(
        "[{}] iteration {} {} | tasks {}/{} | {}",
        status(run.status, colour),
        if iteration.is_empty() { "-" } else { iteration },
        if phase.is_empty() { "-" } else { phase },
        run.tasks_done,
        run.tasks_total,
        duration_ms(elapsed_ms)
    )
}
