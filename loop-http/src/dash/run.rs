//! A run's page (`/ui/runs/{id}`): header, lifecycle, budget and steps (the live part, also
//! served alone as `/ui/runs/{id}/live` for the script to refresh), the pause / resume /
//! cancel / retry buttons, the live agent output and the events (both over the API's SSE
//! routes), artifacts and logs, and the postmortem summary.

use std::fmt::Write as _;
use std::path::Path;

use hyper::{Response, StatusCode};
use loop_engine::Engine;
use loop_engine::domain::{Event, EventKind, Run, RunId, Step, now_ms};
use loop_engine::engine::BudgetStatus;

use super::html::{self, esc};
use crate::error::ApiError;
use crate::server::body::RespBody;

/// Events shown on the page when it loads (older ones stay in the run's report).
const EVENTS_SHOWN: u64 = 200;
/// Events read to work out the lifecycle.
const LIFECYCLE_EVENTS: u32 = 5000;
/// Largest artifact or analysis file shown.
const VIEW_MAX: u64 = 2 * 1024 * 1024;

fn store_err(e: loop_engine::backend::StoreError) -> ApiError {
    ApiError::from(loop_engine::error::EngineError::from(e))
}

/// What the live part needs.
struct Live {
    run: Run,
    steps: Vec<Step>,
    events: Vec<Event>,
}

async fn load_live(engine: &Engine, id: RunId) -> Result<Live, ApiError> {
    let run = engine.get_run(id).await?;
    let steps = engine.store().list_steps(id).await.map_err(store_err)?;
    let events = engine.events_after(id, 0, LIFECYCLE_EVENTS).await?;
    Ok(Live { run, steps, events })
}

/// One line of a JSON payload, for the events table and the lifecycle.
fn payload_summary(e: &Event) -> String {
    let p = &e.payload;
    if let Some(m) = p.get("message").and_then(|m| m.as_str()) {
        return m.to_owned();
    }
    let text = p.to_string();
    if text == "null" || text == "{}" {
        return String::new();
    }
    let mut cut: String = text.chars().take(240).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

fn render_live(live: &Live) -> String {
    let run = &live.run;
    let now = now_ms();
    let budget = BudgetStatus::of(run, &live.steps, now);
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"run-head\" data-status=\"{status}\" data-terminal=\"{terminal}\">\
         <p>{badge} <span class=\"review\">review: {review}</span></p><dl class=\"facts\">",
        status = run.status.as_str(),
        terminal = run.status.is_terminal(),
        badge = html::status_badge(run.status),
        review = esc(&run.review_status.to_string()),
    );
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    fact(
        "Exit reason",
        run.exit_reason
            .as_ref()
            .map(|r| esc(&r.to_string()))
            .unwrap_or_else(|| "—".into()),
    );
    if let Some(f) = &run.failure {
        fact(
            "Failure",
            format!("<span class=\"error\">{}</span>", esc(f)),
        );
    }
    fact(
        "Workspace",
        format!(
            "<code>{}</code>",
            esc(&run.workspace_root.to_string_lossy())
        ),
    );
    fact(
        "Spec",
        format!("<code>{}</code>", esc(&run.spec_path.to_string_lossy())),
    );
    fact(
        "Branches",
        format!(
            "<code>{}</code> → <code>{}</code>{}",
            esc(&run.base_branch),
            esc(if run.run_branch.is_empty() {
                "(not yet)"
            } else {
                &run.run_branch
            }),
            run.merge_target_branch
                .as_ref()
                .map(|t| format!(" → merge into <code>{}</code>", esc(t)))
                .unwrap_or_default()
        ),
    );
    fact(
        "Worktree",
        format!("<code>{}</code>", esc(&run.worktree_path.to_string_lossy())),
    );
    fact(
        "Tasks",
        format!(
            "<span id=\"tasks\">{}/{}</span>",
            run.tasks_done, run.tasks_total
        ),
    );
    fact("Iterations", run.iterations_run.to_string());
    let limit = |v: Option<String>| {
        v.map(|l| format!(" / {l}"))
            .unwrap_or_else(|| " (no limit)".into())
    };
    fact(
        "Cost",
        format!(
            "{}{}",
            html::usd(budget.cost_usd),
            limit(budget.max_cost_usd.map(html::usd))
        ),
    );
    fact(
        "Tokens",
        format!(
            "{}{}",
            budget.tokens,
            limit(budget.max_tokens.map(|t| t.to_string()))
        ),
    );
    fact(
        "Wall time",
        format!(
            "{} s{}",
            budget.wall_sec,
            limit(budget.max_wall_sec.map(|s| format!("{s} s")))
        ),
    );
    fact("Created", html::time(run.created_at));
    out.push_str("</dl></div>");
    out.push_str(&render_lifecycle(live));
    out.push_str(&render_steps(run.id, &live.steps));
    out
}

fn render_lifecycle(live: &Live) -> String {
    let run = &live.run;
    let last = |kinds: &[EventKind]| live.events.iter().rev().find(|e| kinds.contains(&e.kind));
    let mut items: Vec<(&str, String, bool)> = Vec::new();
    let worktree = last(&[EventKind::WorktreeReady]);
    items.push((
        "Worktree made",
        worktree
            .map(|e| format!("at {}", html::time(e.ts)))
            .unwrap_or_else(|| "not yet".into()),
        worktree.is_some(),
    ));
    items.push((
        "Tasks",
        format!("{} of {} done", run.tasks_done, run.tasks_total),
        run.tasks_total > 0 && run.tasks_done == run.tasks_total,
    ));
    let verify = last(&[EventKind::VerifyEnd, EventKind::VerifySkip]);
    items.push((
        "Verification",
        verify
            .map(|e| {
                let s = payload_summary(e);
                format!("{} {}", e.kind, s)
            })
            .unwrap_or_else(|| "not run yet".into()),
        verify.is_some(),
    ));
    let merged_event = last(&[EventKind::MergeDone]);
    let merged = run.merge_commit.is_some() || merged_event.is_some();
    items.push((
        "Merged",
        if merged {
            format!(
                "yes{}",
                run.merge_commit
                    .as_ref()
                    .map(|c| format!(" ({})", c.chars().take(12).collect::<String>()))
                    .unwrap_or_default()
            )
        } else {
            "no".into()
        },
        merged,
    ));
    let on_disk = !run.worktree_path.as_os_str().is_empty() && run.worktree_path.exists();
    let removed = worktree.is_some() && !on_disk;
    items.push((
        "Worktree removed",
        if removed {
            "yes".into()
        } else if on_disk {
            "no, still on disk".into()
        } else {
            "—".into()
        },
        removed,
    ));
    let mut out = String::from("<h2>Lifecycle</h2><ol class=\"lifecycle\">");
    for (label, text, done) in items {
        let _ = write!(
            out,
            "<li class=\"{}\"><strong>{}</strong> {}</li>",
            if done { "done" } else { "open" },
            esc(label),
            esc(&text)
        );
    }
    out.push_str("</ol>");
    out
}

fn render_steps(run_id: RunId, steps: &[Step]) -> String {
    let mut out = String::from(
        "<h2>Steps</h2><table class=\"steps\" id=\"steps\"><thead><tr><th>#</th><th>Phase</th><th>Label</th>\
         <th class=\"num\">Attempt</th><th>Status</th><th class=\"num\">Duration</th><th class=\"num\">Exit</th>\
         <th class=\"num\">Tokens</th><th class=\"num\">Cost</th><th>Log</th></tr></thead><tbody>",
    );
    if steps.is_empty() {
        out.push_str("<tr class=\"empty\"><td colspan=\"10\">No steps yet.</td></tr>");
    }
    let now = now_ms();
    for s in steps {
        let dur = s
            .started_at
            .map(|a| html::duration(s.ended_at.unwrap_or(now) - a))
            .unwrap_or_else(|| "—".into());
        let (tokens, cost) = s
            .usage
            .as_ref()
            .map(|u| {
                (
                    (u.input_tokens.unwrap_or(0) + u.output_tokens.unwrap_or(0)).to_string(),
                    u.cost_usd.map(html::usd).unwrap_or_else(|| "—".into()),
                )
            })
            .unwrap_or_else(|| ("—".into(), "—".into()));
        let log = if s.output_path.is_some() {
            format!(
                "<a href=\"/runs/{run_id}/steps/{}/log\" target=\"_blank\" rel=\"noopener\">log</a>",
                s.seq
            )
        } else {
            "—".into()
        };
        let _ = write!(
            out,
            "<tr class=\"step-{status}\"><td data-label=\"#\">{seq}</td><td data-label=\"Phase\">{phase}</td>\
             <td data-label=\"Label\">{label}</td><td data-label=\"Attempt\" class=\"num\">{attempt}</td>\
             <td data-label=\"Status\">{status}</td><td data-label=\"Duration\" class=\"num\">{dur}</td>\
             <td data-label=\"Exit\" class=\"num\">{exit}</td><td data-label=\"Tokens\" class=\"num\">{tokens}</td>\
             <td data-label=\"Cost\" class=\"num\">{cost}</td><td data-label=\"Log\">{log}</td></tr>",
            status = esc(&s.status.to_string()),
            seq = s.seq,
            phase = esc(&s.phase.to_string()),
            label = esc(&s.label),
            attempt = s.attempt,
            exit = s
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "—".into()),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn render_event_row(e: &Event) -> String {
    format!(
        "<tr data-seq=\"{seq}\"><td class=\"num\">{seq}</td><td>{ts}</td><td><code>{kind}</code></td><td>{summary}</td></tr>",
        seq = e.seq,
        ts = html::time(e.ts),
        kind = esc(&e.kind.to_string()),
        summary = esc(&payload_summary(e)),
    )
}

/// `GET /ui/runs/{id}/live`: the live part alone.
pub(crate) async fn live(engine: &Engine, id: RunId) -> Result<Response<RespBody>, ApiError> {
    let live = load_live(engine, id).await?;
    Ok(super::html_response(StatusCode::OK, &render_live(&live)))
}

/// `GET /ui/runs/{id}`: the run's page.
pub(crate) async fn page(engine: &Engine, id: RunId) -> Result<Response<RespBody>, ApiError> {
    let live = load_live(engine, id).await?;
    let run = &live.run;
    let last_seq = engine.store().last_event_seq(id).await.map_err(store_err)?;
    let first = last_seq.saturating_sub(EVENTS_SHOWN);
    let events = engine.events_after(id, first, EVENTS_SHOWN as u32).await?;
    let artifacts = engine.artifacts(id).await?;
    let postmortem = engine.postmortem_listing(id).await?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<nav class=\"crumbs\"><a href=\"/\">Runs</a> / <span>{name}</span></nav>\
         <h1 id=\"run-name\">{name}</h1><p class=\"muted\"><code>{id}</code></p>\
         <div class=\"actions\" id=\"actions\" data-run-id=\"{id}\">\
         <button type=\"button\" data-action=\"pause\">Pause</button>\
         <button type=\"button\" data-action=\"resume\">Resume</button>\
         <button type=\"button\" data-action=\"cancel\" class=\"danger\">Cancel</button>\
         <button type=\"button\" data-action=\"retry\">Retry</button>\
         <a class=\"button\" id=\"review-link\" href=\"/ui/runs/{id}/review\">Review diff</a></div>\
         <p id=\"msg\" role=\"status\" aria-live=\"polite\"></p>\
         <div id=\"live\" data-run-id=\"{id}\">{live}</div>",
        name = esc(&run.name),
        id = run.id,
        live = render_live(&live),
    );
    let _ = write!(
        body,
        "<h2>Agent output</h2><div class=\"output-bar\"><label><input type=\"checkbox\" id=\"autoscroll\" checked> Follow</label>\
         <span id=\"output-state\" class=\"muted\">connecting…</span></div>\
         <div id=\"output\" class=\"output\" tabindex=\"0\" data-run-id=\"{id}\" data-terminal=\"{t}\"></div>",
        id = run.id,
        t = run.status.is_terminal()
    );
    let _ = write!(
        body,
        "<h2>Events</h2><div class=\"scroll\"><table class=\"events\" id=\"events\" data-run-id=\"{}\" data-after=\"{}\" data-kinds=\"{}\">\
         <thead><tr><th class=\"num\">#</th><th>Time</th><th>Kind</th><th>Details</th></tr></thead><tbody>",
        run.id,
        last_seq,
        EventKind::ALL
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    for e in &events {
        body.push_str(&render_event_row(e));
    }
    body.push_str("</tbody></table></div><h2>Artifacts and logs</h2><ul class=\"artifacts\" id=\"artifacts\">");
    if artifacts.is_empty() {
        body.push_str("<li class=\"muted\">No artifacts recorded.</li>");
    }
    for a in &artifacts {
        let _ = write!(
            body,
            "<li><a href=\"/ui/runs/{}/artifacts/{}\" target=\"_blank\" rel=\"noopener\">{}</a> <span class=\"muted\">{} · {}</span></li>",
            run.id,
            a.id,
            esc(&a
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()),
            esc(&a.kind.to_string()),
            esc(&a.path.to_string_lossy()),
        );
    }
    body.push_str("</ul><h2>Postmortem</h2><section id=\"postmortem\">");
    match (&postmortem.summary_head, postmortem.files.is_empty()) {
        (None, true) if postmortem.running => body.push_str("<p>A postmortem is under way.</p>"),
        (None, true) => body.push_str("<p class=\"muted\">No postmortem for this run.</p>"),
        (head, _) => {
            if let Some(h) = head {
                let _ = write!(body, "<pre class=\"summary\">{}</pre>", esc(h));
            }
            if let Some(m) = &postmortem.last_message {
                let _ = write!(body, "<p class=\"muted\">{}</p>", esc(m));
            }
            body.push_str("<ul>");
            for f in &postmortem.files {
                let _ = write!(
                    body,
                    "<li><a href=\"/ui/runs/{}/analysis/{}\" target=\"_blank\" rel=\"noopener\">{}</a> <span class=\"muted\">{} bytes</span></li>",
                    run.id,
                    html::url(&f.name),
                    esc(&f.name),
                    f.bytes
                );
            }
            body.push_str("</ul>");
        }
    }
    body.push_str("</section>");
    Ok(super::html_response(
        StatusCode::OK,
        &html::page(&run.name, true, &body),
    ))
}

async fn read_bounded(path: &Path, what: &str) -> Result<String, ApiError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        ApiError::not_found(format!(
            "{what} cannot be opened at {}: {e}",
            path.display()
        ))
    })?;
    let mut buf = Vec::new();
    file.take(VIEW_MAX)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| {
            ApiError::internal(format!("cannot read {what} at {}: {e}", path.display()))
        })?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if buf.len() as u64 >= VIEW_MAX {
        text.push_str(&format!("\n[… cut at {VIEW_MAX} bytes]\n"));
    }
    Ok(text)
}

/// `GET /ui/runs/{id}/artifacts/{artifact id}`: a recorded artifact's text.
pub(crate) async fn artifact(
    engine: &Engine,
    id: RunId,
    aid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let aid: i64 = aid.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "artifact `{aid}` of run {id} is not an artifact id"
        ))
    })?;
    let artifacts = engine.artifacts(id).await?;
    let a = artifacts
        .iter()
        .find(|a| a.id == aid)
        .ok_or_else(|| ApiError::not_found(format!("run {id} has no artifact {aid}")))?;
    let text = read_bounded(&a.path, &format!("artifact {aid} of run {id}")).await?;
    Ok(super::text_response(text))
}

/// `GET /ui/runs/{id}/analysis/{name}`: a postmortem file (only names the listing holds).
pub(crate) async fn analysis_file(
    engine: &Engine,
    id: RunId,
    name: &str,
) -> Result<Response<RespBody>, ApiError> {
    let name = crate::query::decode(name).map_err(|_| {
        ApiError::bad_request(format!("analysis file name of run {id} is not UTF-8"))
    })?;
    let listing = engine.postmortem_listing(id).await?;
    let f = listing
        .files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::not_found(format!("run {id} has no analysis file `{name}`")))?;
    let text = read_bounded(&f.path, &format!("analysis file `{name}` of run {id}")).await?;
    Ok(super::text_response(text))
}
