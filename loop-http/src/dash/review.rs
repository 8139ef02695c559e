//! A run's review page (`/ui/runs/{id}/review[?commit=<sha>]`): the diff of SPEC §12, in all
//! or of one commit (files with +/- counts, the unified diff coloured by line kind, the
//! commits) and the merge / scrap / create-PR actions, each behind a confirmation; a 409
//! conflict lists the paths.

use std::fmt::Write as _;

use hyper::{Response, StatusCode};
use loop_engine::Engine;
use loop_engine::backend::{DiffLimits, FileStatus};
use loop_engine::domain::RunId;

use super::html::{self, esc};
use crate::error::ApiError;
use crate::server::body::RespBody;

fn status_word(s: &FileStatus) -> &'static str {
    match s {
        FileStatus::Added => "added",
        FileStatus::Modified => "modified",
        FileStatus::Deleted => "deleted",
        FileStatus::Renamed => "renamed",
    }
}

/// The CSS class of a unified-diff line.
fn line_class(line: &str) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") {
        "dm"
    } else if line.starts_with('+') {
        "da"
    } else if line.starts_with('-') {
        "dd"
    } else if line.starts_with("@@") {
        "dh"
    } else if line.starts_with("diff ")
        || line.starts_with("index ")
        || line.starts_with("new file")
        || line.starts_with("deleted file")
        || line.starts_with("rename ")
        || line.starts_with("similarity ")
        || line.starts_with('\\')
    {
        "dm"
    } else {
        "dc"
    }
}

/// A patch as lines with their classes.
pub(crate) fn render_patch(patch: &str) -> String {
    let mut out = String::with_capacity(patch.len() * 2);
    out.push_str("<pre class=\"patch\"><code>");
    for line in patch.lines() {
        let _ = write!(
            out,
            "<span class=\"{}\">{}</span>",
            line_class(line),
            esc(line)
        );
    }
    out.push_str("</code></pre>");
    out
}

fn anchor(path: &str) -> String {
    let mut a = String::from("f-");
    for c in path.chars() {
        a.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    a
}

/// `GET /ui/runs/{id}/review[?commit=<sha>]`.
pub(crate) async fn page(
    engine: &Engine,
    id: RunId,
    query: &str,
) -> Result<Response<RespBody>, ApiError> {
    let mut commit: Option<String> = None;
    for (k, v) in crate::query::parse(query).map_err(ApiError::bad_request)? {
        match k.as_str() {
            "commit" if !v.is_empty() => commit = Some(v),
            "commit" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}` of the review page of run {id} (known: commit)"
                )));
            }
        }
    }
    let run = engine.get_run(id).await?;
    let diff = engine.diff(id, DiffLimits::default()).await?;
    let d = &diff.diff;
    let mut body = String::new();
    let _ = write!(
        body,
        "<nav class=\"crumbs\"><a href=\"/\">Runs</a> / <a href=\"/ui/runs/{id}\">{name}</a> / <span>Review</span></nav>\
         <h1>Review {name}</h1><p>{badge} review: <span id=\"review-status\">{review}</span></p>\
         <p class=\"muted\"><code>{base}</code> … <code>{head}</code>: \
         <span id=\"diff-stats\">{files} files, <span class=\"plus\">+{add}</span> <span class=\"minus\">−{del}</span></span>{trunc}</p>",
        id = run.id,
        name = esc(&run.name),
        badge = html::status_badge(run.status),
        review = esc(&run.review_status.to_string()),
        base = esc(&diff.base_ref),
        head = esc(&diff.head_ref),
        files = d.stats.files_changed,
        add = d.stats.additions,
        del = d.stats.deletions,
        trunc = if d.truncated {
            " <strong>(cut: the diff is larger than shown)</strong>"
        } else {
            ""
        },
    );
    let target = run
        .merge_target_branch
        .clone()
        .unwrap_or_else(|| run.base_branch.clone());
    let _ = write!(
        body,
        "<section class=\"review-actions\" id=\"review-actions\" data-run-id=\"{id}\">\
         <label>Into <input id=\"merge-target\" value=\"{target}\" size=\"18\"></label>\
         <label>Strategy <select id=\"merge-strategy\"><option value=\"squash\">squash</option><option value=\"merge\">merge</option></select></label>\
         <button type=\"button\" data-confirm=\"merge\" id=\"merge\">Merge…</button>\
         <button type=\"button\" data-confirm=\"create-pr\" id=\"create-pr\">Create PR…</button>\
         <button type=\"button\" data-confirm=\"scrap\" id=\"scrap\" class=\"danger\">Scrap…</button>\
         <div id=\"confirm\" class=\"confirm\" hidden><p id=\"confirm-text\"></p>\
         <button type=\"button\" id=\"confirm-yes\">Confirm</button> <button type=\"button\" id=\"confirm-no\">Cancel</button></div>\
         <div id=\"review-result\" role=\"status\" aria-live=\"polite\"></div></section>",
        id = run.id,
        target = esc(&target),
    );
    body.push_str("<h2>Commits</h2><ul class=\"commits\" id=\"commits\">");
    let _ = write!(
        body,
        "<li><a href=\"/ui/runs/{}/review\"{}>All commits (aggregate)</a></li>",
        run.id,
        if commit.is_none() {
            " aria-current=\"page\""
        } else {
            ""
        }
    );
    for c in &d.commits {
        let short: String = c.sha.chars().take(10).collect();
        let current = commit.as_deref() == Some(c.sha.as_str());
        let _ = write!(
            body,
            "<li><a href=\"/ui/runs/{id}/review?commit={sha}\"{cur}><code>{short}</code> {msg}</a> \
             <span class=\"muted\">{author} · {n} files <span class=\"plus\">+{a}</span> <span class=\"minus\">−{dl}</span></span></li>",
            id = run.id,
            sha = esc(&c.sha),
            cur = if current {
                " aria-current=\"page\""
            } else {
                ""
            },
            short = esc(&short),
            msg = esc(c.message.lines().next().unwrap_or_default()),
            author = esc(&c.author),
            n = c.stats.files_changed,
            a = c.stats.additions,
            dl = c.stats.deletions,
        );
    }
    body.push_str("</ul>");
    let commit_diff;
    let shown: Vec<&loop_engine::backend::DiffFile> = match &commit {
        None => d.files.iter().collect(),
        Some(sha) => {
            let c = d.commits.iter().find(|c| &c.sha == sha).ok_or_else(|| {
                ApiError::not_found(format!("commit `{sha}` is not in the diff of run {id}"))
            })?;
            let _ = write!(
                body,
                "<p class=\"muted\">Commit <code>{}</code> by {}: {} files, <span class=\"plus\">+{}</span> <span class=\"minus\">−{}</span>.</p><pre class=\"message\">{}</pre>",
                esc(&c.sha),
                esc(&c.author),
                c.stats.files_changed,
                c.stats.additions,
                c.stats.deletions,
                esc(&c.message)
            );
            commit_diff = engine
                .commit_diff(id, &c.sha, DiffLimits::default())
                .await?;
            commit_diff.files.iter().collect()
        }
    };
    body.push_str("<h2>Files</h2><table class=\"files\" id=\"files\"><thead><tr><th>File</th><th>Change</th><th class=\"num\">+</th><th class=\"num\">−</th></tr></thead><tbody>");
    if shown.is_empty() {
        body.push_str("<tr class=\"empty\"><td colspan=\"4\">No changes.</td></tr>");
    }
    for f in &shown {
        let _ = write!(
            body,
            "<tr><td data-label=\"File\"><a href=\"#{a}\">{p}</a>{old}</td><td data-label=\"Change\">{s}</td>\
             <td data-label=\"+\" class=\"num plus\">{add}</td><td data-label=\"−\" class=\"num minus\">{del}</td></tr>",
            a = anchor(&f.path),
            p = esc(&f.path),
            old = f
                .old_path
                .as_ref()
                .map(|o| format!(" <span class=\"muted\">from {}</span>", esc(o)))
                .unwrap_or_default(),
            s = status_word(&f.status),
            add = f.additions,
            del = f.deletions,
        );
    }
    body.push_str("</tbody></table><h2>Diff</h2>");
    for f in &shown {
        let _ = write!(
            body,
            "<section class=\"file\" id=\"{}\"><h3><code>{}</code> <span class=\"plus\">+{}</span> <span class=\"minus\">−{}</span></h3>",
            anchor(&f.path),
            esc(&f.path),
            f.additions,
            f.deletions
        );
        if f.binary {
            body.push_str("<p class=\"muted\">Binary file.</p>");
        } else {
            body.push_str(&render_patch(&f.patch));
        }
        if f.truncated {
            body.push_str("<p class=\"muted\">The patch of this file was cut.</p>");
        }
        body.push_str("</section>");
    }
    Ok(super::html_response(
        StatusCode::OK,
        &html::page(&format!("Review {}", run.name), true, &body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_lines_get_classes_and_escaping() {
        let html = render_patch(
            "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-<old>\n+new & better\n same\n",
        );
        assert!(html.contains("<span class=\"dm\">diff --git a/x b/x</span>"));
        assert!(html.contains("<span class=\"dm\">+++ b/x</span>"));
        assert!(html.contains("<span class=\"dh\">@@ -1 +1 @@</span>"));
        assert!(html.contains("<span class=\"dd\">-&lt;old&gt;</span>"));
        assert!(html.contains("<span class=\"da\">+new &amp; better</span>"));
        assert!(html.contains("<span class=\"dc\"> same</span>"));
    }

    #[test]
    fn anchors_are_safe_ids() {
        assert_eq!(anchor("src/a b.rs"), "f-src-a-b-rs");
    }
}
