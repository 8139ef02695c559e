//! The runs list (`/`): every run of every workspace, newest first, 50 a page, filtered by
//! workspace, status and text; and its rows as a fragment (`/ui/rows`) that the page's script
//! fetches every second to update statuses and counts without a reload.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use hyper::{Response, StatusCode};
use loop_engine::Engine;
use loop_engine::backend::RunFilter;
use loop_engine::domain::{Run, RunId, RunStatus, now_ms};
use loop_engine::engine::BudgetStatus;

use super::html::{self, esc, url};
use crate::error::ApiError;
use crate::server::body::RespBody;
use crate::server::routes::parse_run_id;

/// Runs per page.
pub(crate) const PAGE_SIZE: u32 = 50;
/// Runs read from the store at a time while a text filter looks for matches.
const SCAN_PAGE: u32 = 500;
/// Recent runs whose workspaces are offered in the workspace filter.
const WORKSPACE_HINTS: u32 = 200;

/// The list's filter, from the page's query string.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ListQuery {
    /// Only runs of this workspace.
    pub(crate) workspace: String,
    /// Only runs in this state (empty: any).
    pub(crate) status: Option<RunStatus>,
    /// Only runs whose name, spec, branch or workspace contains this (case-insensitive).
    pub(crate) text: String,
    /// Only runs older than this one (the next page).
    pub(crate) before: Option<RunId>,
}

impl ListQuery {
    pub(crate) fn parse(query: &str) -> Result<Self, ApiError> {
        let mut q = Self::default();
        let pairs = crate::query::parse(query).map_err(ApiError::bad_request)?;
        for (k, v) in pairs {
            let v = v.trim().to_owned();
            match k.as_str() {
                "workspace" => q.workspace = v,
                "status" if v.is_empty() => {}
                "status" => {
                    q.status = Some(v.to_ascii_uppercase().parse().map_err(|_| {
                        ApiError::bad_request(format!("unknown status `{v}` in the runs filter"))
                    })?);
                }
                "q" => q.text = v,
                "before" if v.is_empty() => {}
                "before" => q.before = Some(parse_run_id(&v)?),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown filter `{other}` (known: workspace, status, q, before)"
                    )));
                }
            }
        }
        Ok(q)
    }

    /// The query string of this filter, without `before`.
    fn filter_query(&self) -> String {
        let mut parts = Vec::new();
        if !self.workspace.is_empty() {
            parts.push(format!("workspace={}", url(&self.workspace)));
        }
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if !self.text.is_empty() {
            parts.push(format!("q={}", url(&self.text)));
        }
        parts.join("&")
    }

    fn matches_text(&self, run: &Run) -> bool {
        if self.text.is_empty() {
            return true;
        }
        let needle = self.text.to_lowercase();
        [
            run.name.as_str(),
            &run.spec_path.to_string_lossy(),
            run.run_branch.as_str(),
            &run.workspace_root.to_string_lossy(),
            &run.id.to_string(),
        ]
        .iter()
        .any(|h| h.to_lowercase().contains(&needle))
    }
}

/// One page of runs and whether more follow.
pub(crate) struct Page {
    pub(crate) runs: Vec<(Run, BudgetStatus)>,
    pub(crate) more: bool,
}

/// Reads one page of the list: the store pages by `before`; a text filter reads on in pages
/// until it has a page of matches or the runs end.
pub(crate) async fn load(engine: &Engine, q: &ListQuery) -> Result<Page, ApiError> {
    let mut filter = RunFilter {
        workspace_root: (!q.workspace.is_empty()).then(|| PathBuf::from(&q.workspace)),
        statuses: q.status.into_iter().collect(),
        limit: Some(if q.text.is_empty() {
            PAGE_SIZE + 1
        } else {
            SCAN_PAGE
        }),
        before: q.before,
    };
    let mut picked: Vec<Run> = Vec::new();
    loop {
        let batch = engine.list_runs(&filter).await?;
        let exhausted = batch.len() < filter.limit.unwrap_or(0) as usize;
        filter.before = batch.last().map(|r| r.id);
        picked.extend(batch.into_iter().filter(|r| q.matches_text(r)));
        if picked.len() > PAGE_SIZE as usize || exhausted || q.text.is_empty() {
            break;
        }
    }
    let more = picked.len() > PAGE_SIZE as usize;
    picked.truncate(PAGE_SIZE as usize);
    let now = now_ms();
    let mut runs = Vec::with_capacity(picked.len());
    for run in picked {
        let steps = engine
            .store()
            .list_steps(run.id)
            .await
            .map_err(|e| ApiError::from(loop_engine::error::EngineError::from(e)))?;
        let budget = BudgetStatus::of(&run, &steps, now);
        runs.push((run, budget));
    }
    Ok(Page { runs, more })
}

/// The `<tr>`s of a page.
pub(crate) fn render_rows(page: &Page) -> String {
    let now = now_ms();
    let mut out = String::new();
    if page.runs.is_empty() {
        out.push_str("<tr class=\"empty\"><td colspan=\"7\">No runs match.</td></tr>");
    }
    for (run, budget) in &page.runs {
        let ws = run.workspace_root.to_string_lossy();
        let ws_short = run
            .workspace_root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ws.clone().into_owned());
        let sig = format!(
            "{}|{}|{}|{}|{:.4}|{}",
            run.status.as_str(),
            run.tasks_done,
            run.tasks_total,
            run.iterations_run,
            budget.cost_usd,
            run.review_status
        );
        let _ = write!(
            out,
            "<tr data-run-id=\"{id}\" data-sig=\"{sig}\">\
             <td data-label=\"Run\"><a href=\"/ui/runs/{id}\">{name}</a></td>\
             <td data-label=\"Workspace\" title=\"{ws}\">{ws_short}</td>\
             <td data-label=\"Status\" class=\"status\">{badge}</td>\
             <td data-label=\"Tasks\" class=\"tasks num\">{done}/{total}</td>\
             <td data-label=\"Iteration\" class=\"iter num\">{iter}</td>\
             <td data-label=\"Cost\" class=\"cost num\">{cost}</td>\
             <td data-label=\"Age\" class=\"num\" title=\"{created}\">{age}</td></tr>",
            id = run.id,
            sig = esc(&sig),
            name = esc(&run.name),
            ws = esc(&ws),
            ws_short = esc(&ws_short),
            badge = html::status_badge(run.status),
            done = run.tasks_done,
            total = run.tasks_total,
            iter = run.iterations_run,
            cost = html::usd(budget.cost_usd),
            created = html::time(run.created_at),
            age = html::age(now, run.created_at),
        );
    }
    out
}

/// `GET /ui/rows`: the rows of the filtered list.
pub(crate) async fn rows(engine: &Engine, query: &str) -> Result<Response<RespBody>, ApiError> {
    let q = ListQuery::parse(query)?;
    let page = load(engine, &q).await?;
    Ok(super::html_response(StatusCode::OK, &render_rows(&page)))
}

/// `GET /`: the list page.
pub(crate) async fn page(engine: &Engine, query: &str) -> Result<Response<RespBody>, ApiError> {
    let q = ListQuery::parse(query)?;
    let page = load(engine, &q).await?;
    let hints = engine
        .list_runs(&RunFilter {
            limit: Some(WORKSPACE_HINTS),
            ..RunFilter::default()
        })
        .await?
        .into_iter()
        .map(|r| r.workspace_root.to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>();
    let mut body = String::from("<h1>Runs</h1>");
    body.push_str(
        "<form class=\"filters\" method=\"get\" action=\"/\" role=\"search\">\
         <label>Workspace <input name=\"workspace\" id=\"f-workspace\" list=\"workspaces\"",
    );
    let _ = write!(body, " value=\"{}\"></label>", esc(&q.workspace));
    body.push_str("<datalist id=\"workspaces\">");
    for w in &hints {
        let _ = write!(body, "<option value=\"{}\">", esc(w));
    }
    body.push_str("</datalist><label>Status <select name=\"status\" id=\"f-status\"><option value=\"\">any</option>");
    for s in RunStatus::ALL {
        let selected = if q.status == Some(*s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{v}\"{selected}>{v}</option>",
            v = s.as_str()
        );
    }
    let _ = write!(
        body,
        "</select></label><label>Text <input name=\"q\" id=\"f-text\" type=\"search\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        esc(&q.text)
    );
    let filter = q.filter_query();
    let live = if q.before.is_none() { "1" } else { "0" };
    let _ = write!(
        body,
        "<table class=\"runs\" id=\"runs\" data-query=\"{}\" data-live=\"{live}\">\
         <thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Workspace</th><th scope=\"col\">Status</th>\
         <th scope=\"col\" class=\"num\">Tasks</th><th scope=\"col\" class=\"num\">Iteration</th>\
         <th scope=\"col\" class=\"num\">Cost</th><th scope=\"col\" class=\"num\">Age</th></tr></thead><tbody>",
        esc(&filter)
    );
    body.push_str(&render_rows(&page));
    body.push_str("</tbody></table><nav class=\"pager\">");
    if q.before.is_some() {
        let _ = write!(body, "<a href=\"/?{}\">Newest</a>", esc(&filter));
    }
    if page.more
        && let Some((last, _)) = page.runs.last()
    {
        let sep = if filter.is_empty() { "" } else { "&" };
        let _ = write!(
            body,
            "<a id=\"next-page\" href=\"/?{}{sep}before={}\">Older runs</a>",
            esc(&filter),
            last.id
        );
    }
    body.push_str("</nav>");
    Ok(super::html_response(
        StatusCode::OK,
        &html::page("Runs", true, &body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_parses_and_names_bad_values() {
        let q = ListQuery::parse("workspace=%2Ftmp%2Fw&status=running&q=wid").expect("parses");
        assert_eq!(q.workspace, "/tmp/w");
        assert_eq!(q.status, Some(RunStatus::Running));
        assert_eq!(q.text, "wid");
        assert_eq!(q.filter_query(), "workspace=/tmp/w&status=RUNNING&q=wid");
        let e = ListQuery::parse("status=DONE").unwrap_err();
        assert!(e.message.contains("`DONE`"), "{}", e.message);
        let e = ListQuery::parse("colour=red").unwrap_err();
        assert!(e.message.contains("`colour`"), "{}", e.message);
        assert!(ListQuery::parse("before=nope").is_err());
        assert_eq!(
            ListQuery::parse("status=&before=").expect("empty"),
            ListQuery::default()
        );
    }
}
