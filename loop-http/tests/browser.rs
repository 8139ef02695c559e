//! The dashboard in a real headless Chromium over WebDriver (SPEC §13), against a real server
//! on 127.0.0.1 with real runs of the simulated agent: log in; the list shows runs and updates
//! live; a run's page follows it to the end without a reload, with live output and events;
//! review a diff and merge it, a conflict shows its paths; start a run from the form; the
//! keyboard works; phone and desktop widths fit; no console errors. One browser session for
//! all phases keeps the suite quick. Screenshots of each page land in a kept temporary folder
//! whose paths are printed.
//!
//! Without Chromium and chromedriver the test says why and passes, unless
//! `LOOP_REQUIRE_BROWSER=1` (set by `.ci/run`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loop_engine::domain::RunStatus;
use serde_json::Value;

use crate::support::{Server, Setup, TOKEN};
use webdriver_lite::{Browser, find_browser};

fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Chromium and its driver, or `None` after saying why the test is skipped.
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match find_browser() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("LOOP_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
            panic!("LOOP_REQUIRE_BROWSER=1 but {why}")
        }
        Err(why) => {
            scripted_model::cli::say_skipped(test, &why);
            None
        }
    }
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    async fn take(&self, b: &Browser, name: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.png"));
        b.screenshot(&path).await;
        note(&format!("screenshot: {}", path.display()));
        path
    }
}

/// Fails on any console entry of level SEVERE or any error the page's own collector saw.
async fn assert_no_console_errors(b: &Browser, page: &str) {
    let severe: Vec<Value> = b
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "console errors on {page}: {severe:#?}");
    let collected = b.exec("return window.loopDashErrors || [];").await;
    assert_eq!(collected, serde_json::json!([]), "page errors on {page}");
}

/// The page does not scroll sideways (checked for a few seconds, while a resize settles).
async fn assert_fits(b: &Browser, page: &str) {
    let overflow_js = "var d = document.documentElement; return d.scrollWidth - d.clientWidth;";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let overflow = b.exec(overflow_js).await.as_i64().unwrap_or(i64::MAX);
        if overflow <= 1 {
            return;
        }
        if Instant::now() >= deadline {
            let culprits = b
                .exec("var w = document.documentElement.clientWidth, out = []; document.querySelectorAll('body *').forEach(function (e) { var r = e.getBoundingClientRect(); if (r.right > w + 1 && out.length < 8) { out.push(e.tagName + '#' + e.id + '.' + e.className + ' right=' + Math.round(r.right)); } }); return [w, window.innerWidth, out];")
                .await;
            panic!("{page} scrolls sideways by {overflow} px: {culprits}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let Some((chromium, driver)) = browser_or_skip("dashboard_in_a_real_browser") else {
        return;
    };
    let server = Server::with(Setup {
        agent_delay: Duration::from_millis(1200),
        ..Setup::default()
    })
    .await;
    let tmp = tempfile::Builder::new()
        .prefix("loop-dash-browser")
        .tempdir()
        .expect("tempdir");
    let shots = Shots {
        dir: tempfile::Builder::new()
            .prefix("loop-dash-screenshots")
            .tempdir()
            .expect("tempdir")
            .keep(),
    };
    let b = Browser::start(&chromium, &driver, &tmp.path().join("profile")).await;
    let base = format!("http://{}", server.addr);
    b.resize(1280, 800).await;

    // ---- Login: the token once, then a session cookie the page cannot read. ----
    b.goto(&format!("{base}/")).await;
    let token_input = b.find("#token").await;
    shots.take(&b, "01-login").await;
    b.type_into(&token_input, "wrong-token\u{E007}").await;
    let err = b.find("#login-error").await;
    assert!(
        b.text(&err).await.contains("not the daemon"),
        "a wrong token is refused"
    );
    // The refusal is a 401, which Chromium logs as a failed load: expected here.
    let _ = b.console().await;
    let token_input = b.find("#token").await;
    b.type_into(&token_input, TOKEN).await;
    b.click(&b.find("#login").await).await;
    b.wait_for(
        "the runs list",
        10,
        "return !!document.querySelector('#runs');",
    )
    .await;
    assert_eq!(
        b.url().await,
        format!("{base}/"),
        "the token is not in the URL"
    );
    let cookie = b.exec("return document.cookie;").await;
    assert_eq!(
        cookie,
        serde_json::json!(""),
        "the session cookie is HttpOnly"
    );
    let html = b.exec("return document.documentElement.outerHTML;").await;
    assert!(
        !html.as_str().unwrap_or_default().contains(TOKEN),
        "the token is not in the page"
    );
    assert_no_console_errors(&b, "the login and the empty list").await;

    // ---- The list shows a new run and follows it live, without a reload. ----
    b.exec("window.loopNoReload = 1; return 1;").await;
    // Runs that leave their branch alone (`merge_strategy=none`): the review merges them.
    let request = loop_http::api::CreateRunRequest {
        merge_strategy: Some(loop_engine::domain::MergeStrategy::None),
        ..server.request()
    };
    let first = server
        .client
        .create_run(&request)
        .await
        .expect("create")
        .run
        .id;
    let row = format!("tr[data-run-id='{first}']");
    b.wait_for(
        "the new run in the list",
        10,
        &format!("return !!document.querySelector(\"{row}\");"),
    )
    .await;
    b.wait_for(
        "the run to show RUNNING or later counts",
        15,
        &format!(
            "var r = document.querySelector(\"{row}\"); return r && /RUNNING|COMPLETED/.test(r.querySelector('.status').textContent);"
        ),
    )
    .await;
    shots.take(&b, "02-list-running").await;
    b.wait_for(
        "COMPLETED and 3/3 tasks in the list",
        30,
        &format!(
            "var r = document.querySelector(\"{row}\"); return r && r.querySelector('.status').textContent === 'COMPLETED' && r.querySelector('.tasks').textContent === '3/3';"
        ),
    )
    .await;
    assert_eq!(
        b.exec("return window.loopNoReload;").await,
        1,
        "the list was not reloaded"
    );
    shots.take(&b, "03-list-completed").await;
    assert_no_console_errors(&b, "the live list").await;

    // ---- The keyboard: filter by text with Enter, then Tab to a run and open it. ----
    let text = b.find("#f-text").await;
    b.type_into(&text, "widget\u{E007}").await;
    b.wait_for(
        "the filtered list",
        10,
        "return location.search.indexOf('q=widget') >= 0;",
    )
    .await;
    b.exec("document.querySelector('#runs tbody a').focus(); return 1;")
        .await;
    b.keys("\u{E007}").await;
    b.wait_for(
        "the run page",
        10,
        "return !!document.querySelector('#live');",
    )
    .await;
    assert!(b.url().await.ends_with(&format!("/ui/runs/{first}")));

    // ---- A run's page follows it to the end without a reload. ----
    let second = server
        .client
        .create_run(&request)
        .await
        .expect("create")
        .run
        .id;
    // Keep the page's SSE connections at hand, to break them below.
    b.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": "(function () { var O = window.EventSource; var stats = { opens: 0, all: [] }; window.loopSse = stats; \
            window.EventSource = function (url, opts) { var e = new O(url, opts); stats.all.push(e); e.addEventListener('open', function () { stats.opens++; }); \
            if (String(url).indexOf('/output') >= 0) { stats.output = e; stats.frames = stats.frames || []; e.addEventListener('output', function (m) { stats.frames.push([m.lastEventId, m.data]); }); } return e; }; \
            window.EventSource.prototype = O.prototype; window.EventSource.CLOSED = O.CLOSED; })();"}),
    )
    .await;
    b.goto(&format!("{base}/ui/runs/{second}")).await;
    b.exec("window.loopNoReload = 1; return 1;").await;
    b.wait_for(
        "live agent output",
        30,
        "var o = document.querySelector('#output'); return o && o.querySelectorAll('.o-raw, .o-text').length > 0 && o.textContent.trim().length > 0;",
    )
    .await;
    shots.take(&b, "04-run-live").await;
    // Break both streams mid-run as a failed connection would: the page opens them again
    // (the events after the last one shown, the output replaying the current step) and shows
    // nothing twice.
    let opens_before = b
        .exec("return window.loopSse.opens;")
        .await
        .as_i64()
        .unwrap_or(0);
    assert!(
        opens_before >= 2,
        "events and output streams opened: {opens_before}"
    );
    b.exec("window.loopSse.all.forEach(function (e) { if (e.readyState !== 2) { e.close(); e.dispatchEvent(new Event('error')); } }); return 1;")
        .await;
    b.wait_for(
        "the streams to be opened again",
        15,
        &format!("return window.loopSse.opens >= {};", opens_before + 2),
    )
    .await;
    b.wait_for(
        "the run to complete on its page",
        40,
        "var h = document.querySelector('.run-head'); return h && h.getAttribute('data-status') === 'COMPLETED';",
    )
    .await;
    b.wait_for(
        "RUN_COMPLETED among the events",
        10,
        "return Array.prototype.some.call(document.querySelectorAll('#events code'), function (c) { return c.textContent === 'RUN_COMPLETED'; });",
    )
    .await;
    assert_eq!(
        b.exec("return window.loopNoReload;").await,
        1,
        "the run page was not reloaded"
    );

    // Nothing arrived twice: event numbers are unique, and no output line repeats within a
    // step (each simulated step writes one line).
    let dup_events = b
        .exec("var s = {}, d = 0; document.querySelectorAll('#events tbody tr').forEach(function (r) { var k = r.getAttribute('data-seq'); if (s[k]) { d++; } s[k] = 1; }); return d;")
        .await;
    assert_eq!(dup_events, 0, "no event is shown twice");
    let lines = b
        .exec("return Array.prototype.map.call(document.querySelectorAll('#output .o-raw, #output .o-text'), function (e) { return e.textContent; }).filter(function (t) { return t.length > 0; });")
        .await;
    let lines: Vec<String> = serde_json::from_value(lines).expect("strings");
    assert!(!lines.is_empty(), "output lines are shown");
    let steps = server.client.steps(second).await.expect("steps");
    assert!(
        lines.len() <= steps.len(),
        "one output line per step at most, got {} lines for {} steps: {lines:#?}",
        lines.len(),
        steps.len()
    );
    // Every output frame received, delivered again (as a replaying stream would): the page
    // skips the bytes it has, so nothing more appears.
    let replay = b
        .exec("var s = window.loopSse, n = function () { return document.querySelectorAll('#output .o-raw, #output .o-text').length; }; \
               var before = n(), frames = (s.frames || []).slice(); \
               frames.forEach(function (f) { s.output.dispatchEvent(new MessageEvent('output', { data: f[1], lastEventId: f[0] })); }); \
               return [before, n(), frames.length];")
        .await;
    assert!(
        replay[2].as_i64().unwrap_or(0) > 0,
        "output frames were seen: {replay}"
    );
    assert_eq!(
        replay[0], replay[1],
        "replayed output is not shown twice: {replay}"
    );
    let timeline = b.text(&b.find("#steps").await).await;
    assert!(
        timeline.contains("implementation"),
        "the timeline names phases: {timeline}"
    );
    let lifecycle = b.text(&b.find(".lifecycle").await).await;
    assert!(lifecycle.contains("3 of 3 done"), "{lifecycle}");
    shots.take(&b, "05-run-completed").await;
    assert_no_console_errors(&b, "the run page").await;

    // ---- Review: the diff, then merge with a confirmation. ----
    b.click(&b.find("#review-link").await).await;
    b.wait_for(
        "the review page",
        10,
        "return !!document.querySelector('#files');",
    )
    .await;
    let files = b.text(&b.find("#files").await).await;
    assert!(files.contains("specs/planning/widget-plan.md"), "{files}");
    assert!(
        b.try_find(".patch .da").await.is_some(),
        "added lines are coloured"
    );
    // Into main rather than the run's default target (`agent/widget`).
    let target = b.find("#merge-target").await;
    b.exec("document.querySelector('#merge-target').value = ''; return 1;")
        .await;
    b.type_into(&target, "main").await;
    b.click(&b.find("#merge").await).await;
    let confirm = b.text(&b.find("#confirm-text").await).await;
    assert!(confirm.contains("Merge this run into main"), "{confirm}");
    shots.take(&b, "06-review-confirm").await;
    b.click(&b.find("#confirm-yes").await).await;
    b.wait_for(
        "the merge result",
        20,
        "return /merged/.test(document.querySelector('#review-result').textContent);",
    )
    .await;
    let merged = server.client.get_run(second).await.expect("run");
    assert_eq!(merged.review_status.to_string(), "merged");
    let on_main = server
        .repo
        .file_at("main", "specs/planning/widget-plan.md")
        .unwrap_or_default();
    assert!(
        on_main.contains("[x] Task number 3"),
        "the run's plan is on main: {on_main}"
    );
    assert_no_console_errors(&b, "the review page").await;

    // A conflicting change on the target: merging the first run answers 409 with the paths.
    server
        .repo
        .write_file("specs/planning/widget-plan.md", "# Rewritten by hand\n");
    server.repo.commit_all("rewrite the plan by hand");
    b.goto(&format!("{base}/ui/runs/{first}/review")).await;
    b.exec("document.querySelector('#merge-target').value = 'main'; return 1;")
        .await;
    b.click(&b.find("#merge").await).await;
    b.click(&b.find("#confirm-yes").await).await;
    let conflict = b
        .wait_for(
            "the conflict",
            20,
            "var t = document.querySelector('#review-result').textContent; return /409/.test(t) && t;",
        )
        .await;
    let conflict = conflict.as_str().unwrap_or_default().to_owned();
    assert!(
        conflict.contains("specs/planning/widget-plan.md"),
        "{conflict}"
    );
    shots.take(&b, "07-review-conflict").await;
    // The 409 is an expected answer, but Chromium logs every failed fetch: drain it.
    let _ = b.console().await;
    // Put the plan back for the next run.
    server
        .repo
        .write_file("specs/planning/widget-plan.md", crate::support::PLAN);
    server.repo.commit_all("restore the plan");

    // ---- Start a run from the form, with a preview. ----
    b.goto(&format!("{base}/ui/new")).await;
    b.wait_for(
        "the specs of the workspace",
        10,
        "var s = document.querySelector('#spec'); return s && s.options.length > 0 && s.value;",
    )
    .await;
    let iterations = b.find("#iterations").await;
    b.type_into(&iterations, "20").await;
    b.click(&b.find("#preview").await).await;
    let preview = b
        .wait_for(
            "the prompt preview",
            10,
            "var p = document.querySelector('#prompt-preview'); return p && p.textContent;",
        )
        .await;
    assert!(
        preview.as_str().unwrap_or_default().contains("widget"),
        "the preview shows the prompt: {preview}"
    );
    shots.take(&b, "08-new-run").await;
    b.click(&b.find("#start").await).await;
    b.wait_for(
        "the new run's page",
        10,
        "return !!document.querySelector('#live');",
    )
    .await;
    let url = b.url().await;
    let third: loop_engine::domain::RunId = url
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a run page URL: {url}"));
    let created = server.client.get_run(third).await.expect("the started run");
    assert_eq!(
        created.config["iterations"], 20,
        "the override reached the run"
    );
    // Its buttons: pause (at the next step boundary), resume, cancel, retry; the page follows
    // each state without a reload.
    let status_is = |want: &str| {
        format!(
            "var h = document.querySelector('.run-head'); return h && h.getAttribute('data-status') === '{want}';"
        )
    };
    b.click(&b.find("#actions [data-action='pause']").await)
        .await;
    b.wait_for("PAUSED on the page", 20, &status_is("PAUSED"))
        .await;
    shots.take(&b, "09-run-paused").await;
    b.click(&b.find("#actions [data-action='resume']").await)
        .await;
    b.wait_for("RUNNING again", 20, &status_is("RUNNING")).await;
    b.click(&b.find("#actions [data-action='cancel']").await)
        .await;
    b.wait_for("CANCELED on the page", 20, &status_is("CANCELED"))
        .await;
    b.click(&b.find("#actions [data-action='retry']").await)
        .await;
    b.wait_for("the retried run to complete", 40, &status_is("COMPLETED"))
        .await;
    let started = server.wait_for(third, |r| r.status.is_terminal()).await;
    assert_eq!(
        started.status,
        RunStatus::Completed,
        "{:?}",
        started.failure
    );
    assert_no_console_errors(&b, "the start form and the run's buttons").await;

    // ---- A phone-width screen, and a paint time at this size. ----
    b.resize(390, 844).await;
    let t = Instant::now();
    b.goto(&format!("{base}/")).await;
    note(&format!(
        "list load at phone width: {} ms",
        t.elapsed().as_millis()
    ));
    assert_fits(&b, "the list at phone width").await;
    shots.take(&b, "10-list-phone").await;
    b.goto(&format!("{base}/ui/runs/{second}")).await;
    assert_fits(&b, "the run page at phone width").await;
    shots.take(&b, "11-run-phone").await;
    b.goto(&format!("{base}/ui/runs/{first}/review")).await;
    assert_fits(&b, "the review page at phone width").await;
    shots.take(&b, "12-review-phone").await;
    b.goto(&format!("{base}/ui/new")).await;
    assert_fits(&b, "the start form at phone width").await;
    shots.take(&b, "13-new-phone").await;
    b.resize(1280, 800).await;
    b.goto(&format!("{base}/")).await;
    assert_fits(&b, "the list at 1280x800").await;
    assert_no_console_errors(&b, "the phone-width pages").await;

    // ---- Logging out ends the session. ----
    b.click(&b.find("#logout").await).await;
    b.wait_for(
        "the login page",
        10,
        "return !!document.querySelector('#token');",
    )
    .await;
    b.goto(&format!("{base}/ui/runs/{first}")).await;
    assert!(
        b.try_find("#token").await.is_some(),
        "pages need the session again"
    );
    let status = b
        .exec("var x = new XMLHttpRequest(); x.open('GET', '/runs', false); x.send(); return x.status;")
        .await;
    assert_eq!(status, 401, "the API refuses the browser without a session");
    let _ = b.console().await;

    maybe_update_readme_screenshot(&shots.dir.join("05-run-completed.png"));
    note(&format!("screenshots in {}", shots.dir.display()));
}

/// With `UPDATE_SCREENSHOT=1`, copies the run page's screenshot to `docs/dashboard.png`
/// (the README's picture).
fn maybe_update_readme_screenshot(shot: &Path) {
    if std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        let to = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).expect("docs folder");
        }
        std::fs::copy(shot, &to).expect("copy the screenshot");
        note(&format!("README screenshot updated: {}", to.display()));
    }
}
