//! The start-a-run form (`/ui/new`): a workspace (one of the known ones or a path), a spec and
//! a plan from its `specs/` folder (listed by `/ui/specs`), overrides (reviewer, iterations,
//! budgets), a prompt preview (`POST /prompt`) and the start (`POST /runs`), both through the
//! JSON API.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hyper::{Response, StatusCode};
use loop_engine::Engine;
use loop_engine::backend::RunFilter;
use serde::Serialize;

use super::html::{self, esc};
use crate::error::ApiError;
use crate::server::body::{self, RespBody};

/// Recent runs whose workspaces the form offers.
const KNOWN_FROM: u32 = 500;
/// Most files listed per folder.
const MAX_FILES: usize = 500;

/// The answer of `GET /ui/specs`.
#[derive(Debug, Serialize)]
struct SpecFiles {
    /// Spec files, relative to the workspace.
    specs: Vec<String>,
    /// Plan files, relative to the workspace.
    plans: Vec<String>,
}

/// Markdown files directly in `dir`, as paths relative to `root`, sorted.
fn markdown_files(root: &Path, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md"))
        .filter_map(|p| {
            p.strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
        })
        .collect();
    out.sort();
    out.truncate(MAX_FILES);
    out
}

/// `GET /ui/specs?workspace=<path>`: the specs (`specs/*.md`) and plans (`specs/planning/*.md`)
/// of a workspace.
pub(crate) async fn specs(query: &str) -> Result<Response<RespBody>, ApiError> {
    let workspace = crate::query::parse(query)
        .map_err(ApiError::bad_request)?
        .into_iter()
        .find(|(k, _)| k == "workspace")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing `workspace`: name a workspace folder"))?;
    let root = PathBuf::from(&workspace);
    if !root.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "workspace `{workspace}` is not an absolute path"
        )));
    }
    let files = tokio::task::spawn_blocking(move || {
        if !root.is_dir() {
            return Err(ApiError::not_found(format!(
                "workspace `{}` is not a folder",
                root.display()
            )));
        }
        Ok(SpecFiles {
            specs: markdown_files(&root, &root.join("specs")),
            plans: markdown_files(&root, &root.join("specs").join("planning")),
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("listing the workspace's specs failed: {e}")))??;
    Ok(body::json(StatusCode::OK, &files))
}

/// `GET /ui/new[?workspace=<path>]`: the form.
pub(crate) async fn page(engine: &Engine, query: &str) -> Result<Response<RespBody>, ApiError> {
    let chosen = crate::query::parse(query)
        .map_err(ApiError::bad_request)?
        .into_iter()
        .find(|(k, _)| k == "workspace")
        .map(|(_, v)| v);
    let known: BTreeSet<String> = engine
        .list_runs(&RunFilter {
            limit: Some(KNOWN_FROM),
            ..RunFilter::default()
        })
        .await?
        .into_iter()
        .map(|r| r.workspace_root.to_string_lossy().into_owned())
        .collect();
    let first = chosen
        .or_else(|| known.iter().next().cloned())
        .unwrap_or_default();
    let mut body = String::from(
        "<nav class=\"crumbs\"><a href=\"/\">Runs</a> / <span>Start a run</span></nav><h1>Start a run</h1>\
         <form id=\"new-run\" class=\"new-run\" autocomplete=\"off\">\
         <label for=\"workspace\">Workspace</label>",
    );
    let _ = write!(
        body,
        "<input id=\"workspace\" name=\"workspace\" list=\"known-workspaces\" required value=\"{}\" \
         placeholder=\"/path/to/a/git/repository\"><datalist id=\"known-workspaces\">",
        esc(&first)
    );
    for w in &known {
        let _ = write!(body, "<option value=\"{}\">", esc(w));
    }
    body.push_str(
        "</datalist>\
         <label for=\"spec\">Spec</label><select id=\"spec\" name=\"spec\" required></select>\
         <label for=\"plan\">Plan</label><select id=\"plan\" name=\"plan\"><option value=\"\">default (specs/planning/&lt;spec&gt;-plan.md)</option></select>\
         <label for=\"name\">Name (optional)</label><input id=\"name\" name=\"name\">\
         <fieldset><legend>Overrides</legend>\
         <label for=\"reviewer\">Reviewer</label><select id=\"reviewer\" name=\"reviewer\">\
         <option value=\"\">from config</option><option value=\"true\">on</option><option value=\"false\">off</option></select>\
         <label for=\"iterations\">Iterations</label><input id=\"iterations\" name=\"iterations\" type=\"number\" min=\"1\" placeholder=\"from config\">\
         <label for=\"max_cost_usd\">Cost budget (USD)</label><input id=\"max_cost_usd\" name=\"max_cost_usd\" type=\"number\" min=\"0\" step=\"0.01\" placeholder=\"none\">\
         <label for=\"max_tokens\">Token budget</label><input id=\"max_tokens\" name=\"max_tokens\" type=\"number\" min=\"1\" placeholder=\"none\">\
         <label for=\"max_wall_sec\">Wall-clock budget (s)</label><input id=\"max_wall_sec\" name=\"max_wall_sec\" type=\"number\" min=\"0\" placeholder=\"none\">\
         </fieldset>\
         <div class=\"buttons\"><button type=\"button\" id=\"preview\">Preview prompt</button>\
         <button type=\"submit\" id=\"start\">Start run</button></div>\
         <p id=\"form-msg\" role=\"status\" aria-live=\"polite\"></p></form>\
         <section id=\"preview-box\" hidden><h2>Prompt preview</h2><p id=\"preview-warnings\" class=\"muted\"></p>\
         <pre id=\"prompt-preview\" class=\"prompt\" tabindex=\"0\"></pre></section>",
    );
    Ok(super::html_response(
        StatusCode::OK,
        &html::page("Start a run", true, &body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_files_lists_md_relative_and_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs = dir.path().join("specs");
        std::fs::create_dir_all(specs.join("planning")).expect("mkdir");
        for f in ["b.md", "a.md", "notes.txt"] {
            std::fs::write(specs.join(f), "x").expect("write");
        }
        assert_eq!(
            markdown_files(dir.path(), &specs),
            vec!["specs/a.md".to_owned(), "specs/b.md".to_owned()]
        );
        assert!(markdown_files(dir.path(), &dir.path().join("missing")).is_empty());
    }
}
