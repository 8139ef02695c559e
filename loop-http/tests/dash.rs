//! The dashboard over plain HTTP (SPEC §13): login and its session cookie, logout, the refusals
//! (no session, cross-site and origin-less state changes, foreign hosts), and every page
//! rendered for a real run. The browser itself is exercised in `browser.rs`.

use loop_engine::domain::RunStatus;

use crate::support::{Server, TOKEN};

/// Logs in over HTTP and returns the `Cookie` header value of the session.
pub(crate) async fn login(server: &Server) -> String {
    let origin = format!("http://{}", server.addr);
    let body = format!("token={TOKEN}");
    let (status, headers, _) = server
        .raw(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(status, 303, "login answers with a redirect");
    assert_eq!(headers["location"], "/");
    let cookie = headers["set-cookie"].to_str().expect("ascii").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim()
        .to_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_the_dashboard_shows_the_login_page_and_refuses_the_rest() {
    let server = Server::idle().await;
    let id = server.queued_run().await;
    let (status, headers, body) = server.raw("GET", "/", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("script-src 'self'")
    );
    let page = text(&body);
    assert!(page.contains("action=\"/login\""), "{page}");
    assert!(!page.contains(TOKEN));
    // Pages redirect to the login page, fragments and the API answer 401.
    for path in [
        format!("/ui/runs/{id}"),
        format!("/ui/runs/{id}/review"),
        "/ui/new".into(),
    ] {
        let (status, headers, _) = server.raw("GET", &path, &[], None).await;
        assert_eq!(status, 303, "{path}");
        assert_eq!(headers["location"], "/", "{path}");
    }
    for path in [
        "/ui/rows".to_owned(),
        format!("/ui/runs/{id}/live"),
        "/ui/specs?workspace=/tmp".into(),
        "/runs".into(),
    ] {
        let (status, _, _) = server.raw("GET", &path, &[], None).await;
        assert_eq!(status, 401, "{path}");
    }
    // A made-up session is no session.
    let fake = "loopd_session=0123456789abcdef";
    let (status, _, _) = server.raw("GET", "/runs", &[("cookie", fake)], None).await;
    assert_eq!(status, 401);
    let (status, _, body) = server.raw("GET", "/", &[("cookie", fake)], None).await;
    assert_eq!(status, 200);
    assert!(text(&body).contains("action=\"/login\""));
    // The assets load without a session (the login page needs the stylesheet).
    let (status, headers, _) = server.raw("GET", "/ui/assets/dash.css", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/css")
    );
    // The Host rule holds for the dashboard too.
    let (status, _, _) = server
        .raw("GET", "/", &[("host", "evil.example:7700")], None)
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_the_right_token_and_a_same_origin_form() {
    let server = Server::idle().await;
    let origin = format!("http://{}", server.addr);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let with = |o: &'static str| {
        let mut h = form.to_vec();
        h.push(("origin", o));
        h
    };
    let mut ours = form.to_vec();
    ours.push(("origin", &origin));
    let (status, headers, body) = server
        .raw("POST", "/login", &ours, Some(b"token=wrong".to_vec()))
        .await;
    assert_eq!(status, 401);
    assert!(!headers.contains_key("set-cookie"));
    assert!(
        text(&body).contains("not the daemon&#39;s token"),
        "{}",
        text(&body)
    );
    // A cross-site login form and an origin-less one are refused before the token is looked at.
    let (status, headers, _) = server
        .raw(
            "POST",
            "/login",
            &with("http://evil.example"),
            Some(format!("token={TOKEN}").into_bytes()),
        )
        .await;
    assert_eq!(status, 403);
    assert!(!headers.contains_key("set-cookie"));
    let (status, headers, body) = server
        .raw(
            "POST",
            "/login",
            &form,
            Some(format!("token={TOKEN}").into_bytes()),
        )
        .await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(!headers.contains_key("set-cookie"));
    // Two logins are two sessions.
    let a = login(&server).await;
    let b = login(&server).await;
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_opens_the_api_but_state_changes_need_our_origin() {
    let server = Server::idle().await;
    let id = server.queued_run().await;
    let cookie = login(&server).await;
    let origin = format!("http://{}", server.addr);
    let (status, _, body) = server
        .raw("GET", "/runs", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 200, "{}", text(&body));
    let cancel = format!("/runs/{id}/cancel");
    // Cross-site: refused, the run untouched.
    let (status, _, _) = server
        .raw(
            "POST",
            &cancel,
            &[("cookie", &cookie), ("origin", "http://evil.example")],
            None,
        )
        .await;
    assert_eq!(status, 403);
    // No Origin at all (not a browser fetch): refused, naming the rule.
    let (status, _, body) = server
        .raw("POST", &cancel, &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 403);
    assert!(
        text(&body).contains("same-origin `Origin`"),
        "{}",
        text(&body)
    );
    assert_eq!(
        server.client.get_run(id).await.expect("run").status,
        RunStatus::Pending
    );
    // Same origin: done.
    let (status, _, body) = server
        .raw(
            "POST",
            &cancel,
            &[("cookie", &cookie), ("origin", &origin)],
            None,
        )
        .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(
        server.client.get_run(id).await.expect("run").status,
        RunStatus::Canceled
    );
    // A wrong bearer token decides even with a good cookie.
    let (status, _, _) = server
        .raw(
            "GET",
            "/runs",
            &[("cookie", &cookie), ("authorization", "Bearer nope")],
            None,
        )
        .await;
    assert_eq!(status, 401);
    // The bearer token keeps working alone.
    let (status, _) = server.authed("GET", "/runs", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session() {
    let server = Server::idle().await;
    let cookie = login(&server).await;
    let origin = format!("http://{}", server.addr);
    // Logging out is a state change too: not from another site.
    let (status, _, _) = server
        .raw(
            "POST",
            "/logout",
            &[("cookie", &cookie), ("origin", "http://evil.example")],
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = server
        .raw("GET", "/runs", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 200);
    let (status, headers, _) = server
        .raw(
            "POST",
            "/logout",
            &[("cookie", &cookie), ("origin", &origin)],
            None,
        )
        .await;
    assert_eq!(status, 303);
    assert!(
        headers["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let (status, _, _) = server
        .raw("GET", "/runs", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 401);
    let (_, _, body) = server.raw("GET", "/", &[("cookie", &cookie)], None).await;
    assert!(text(&body).contains("action=\"/login\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_a_finished_run_and_escapes_what_it_shows() {
    let server = Server::start().await;
    // The branch is left alone (no automatic merge), so the review shows its commits.
    let req = loop_http::api::CreateRunRequest {
        merge_strategy: Some(loop_engine::domain::MergeStrategy::None),
        ..server.request()
    };
    let id = server.client.create_run(&req).await.expect("create").run.id;
    server.wait_status(id, RunStatus::Completed).await;
    let cookie = login(&server).await;
    let get = |path: String| {
        let cookie = cookie.clone();
        let server = &server;
        async move {
            let (status, _, body) = server.raw("GET", &path, &[("cookie", &cookie)], None).await;
            assert_eq!(status, 200, "{path}: {}", text(&body));
            text(&body)
        }
    };
    let list = get("/".into()).await;
    assert!(list.contains(&format!("data-run-id=\"{id}\"")), "{list}");
    assert!(list.contains("st-COMPLETED"));
    assert!(list.contains("3/3"), "tasks done/total: {list}");
    // What the request hands back (the text filter) is escaped.
    let (status, _, body) = server
        .raw(
            "GET",
            "/?q=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    let reflected = text(&body);
    assert!(!reflected.contains("<script>alert"), "{reflected}");
    assert!(reflected.contains("&quot;&gt;&lt;script&gt;alert(1)"));
    // Filters: status, text, workspace; a bad status names itself.
    assert!(
        get("/?status=FAILED".into())
            .await
            .contains("No runs match.")
    );
    assert!(get("/?q=widget".into()).await.contains(&id.to_string()));
    assert!(
        get("/?q=nothing-like-this".into())
            .await
            .contains("No runs match.")
    );
    let ws = server.repo.path().to_string_lossy().into_owned();
    assert!(
        get(format!("/?workspace={ws}"))
            .await
            .contains(&id.to_string())
    );
    let (status, _, body) = server
        .raw("GET", "/?status=DONE", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 400);
    assert!(text(&body).contains("`DONE`"));
    let rows = get("/ui/rows".into()).await;
    assert!(rows.starts_with("<tr data-run-id="), "{rows}");
    let run = get(format!("/ui/runs/{id}")).await;
    for needle in [
        "Lifecycle",
        "Worktree made",
        "RUN_COMPLETED",
        "data-action=\"retry\"",
        "id=\"output\"",
        "/steps/1/log",
    ] {
        assert!(run.contains(needle), "run page lacks {needle}");
    }
    let live = get(format!("/ui/runs/{id}/live")).await;
    assert!(live.contains("data-terminal=\"true\""));
    let review = get(format!("/ui/runs/{id}/review")).await;
    assert!(
        review.contains("widget-plan.md"),
        "the plan file changed: {review}"
    );
    assert!(review.contains("class=\"da\""), "added lines are coloured");
    // One commit's own patch: the first task's commit adds only its own work file.
    let diff = server
        .engine
        .diff(id, Default::default())
        .await
        .expect("diff");
    let task1 = diff
        .diff
        .commits
        .iter()
        .find(|c| c.message.contains("Task number 1"))
        .expect("the first task's commit");
    let one = get(format!("/ui/runs/{id}/review?commit={}", task1.sha)).await;
    assert!(one.contains("+Task number 1"), "{one}");
    assert!(!one.contains("+Task number 2"), "only that commit's patch");
    let (status, _, _) = server
        .raw(
            "GET",
            &format!("/ui/runs/{id}/review?commit=abc"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(status, 404);
    let new = get("/ui/new".into()).await;
    assert!(new.contains(&ws), "known workspaces are offered");
    let specs = get(format!("/ui/specs?workspace={ws}")).await;
    let json: serde_json::Value = serde_json::from_str(&specs).expect("json");
    assert_eq!(json["specs"][0], "specs/widget.md");
    assert_eq!(json["plans"][0], "specs/planning/widget-plan.md");
    // Artifacts are viewable; unknown ones are a 404 naming the run.
    let artifacts = server.client.artifacts(id).await.expect("artifacts");
    let first = artifacts.first().expect("an artifact");
    let (status, _, _) = server
        .raw(
            "GET",
            &format!("/ui/runs/{id}/artifacts/{}", first.id),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = server
        .raw(
            "GET",
            &format!("/ui/runs/{id}/artifacts/999999"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(text(&body).contains(&id.to_string()));
    let (status, _, _) = server
        .raw("GET", "/ui/runs/not-a-run", &[("cookie", &cookie)], None)
        .await;
    assert_eq!(status, 400);
}
