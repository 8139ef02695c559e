//! The web dashboard of SPEC §13, served by the control plane on its own address: the login
//! page, the runs list, a run's page, its review page and the start-a-run form, as
//! server-rendered HTML with one stylesheet and one script compiled into the binary.
//!
//! The pages read through the engine directly; everything a page *does* (pause, merge, start a
//! run, ...) goes through the JSON API of [`crate::server`], which accepts the dashboard's
//! session cookie in place of the bearer token (see [`api_session`]). Live views use the API's
//! SSE routes and two small HTML fragments ([`list::rows`], [`run::live`]).

mod html;
mod list;
mod new;
mod review;
mod run;
pub(crate) mod session;

use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, HeaderValue, LOCATION, SET_COOKIE};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};

use crate::error::ApiError;
use crate::server::auth::Guard;
use crate::server::body::{self, RespBody};
use crate::server::routes::{State, collect_body, parse_run_id};

pub(crate) use session::Sessions;

/// Largest login form accepted.
const LOGIN_BODY_MAX: usize = 4096;

const CSS: &str = include_str!("assets/dash.css");
const JS: &str = include_str!("assets/dash.js");

/// True for the paths the dashboard answers (everything else is the JSON API).
pub(crate) fn owns(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/logout") || path.starts_with("/ui/")
}

/// Whether an API request may use the session of its cookie instead of a bearer token: only
/// when it has no `Authorization` header (a token always decides) and a live session. A
/// request that changes state must also carry a same-origin `Origin`, which browsers send with
/// every `fetch` POST; a cross-site form cannot, and SameSite=Strict keeps the cookie off it.
pub(crate) fn api_session(
    state: &State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<bool, ApiError> {
    if headers.contains_key(hyper::header::AUTHORIZATION) {
        return Ok(false);
    }
    if state.sessions.live_session(headers).is_none() {
        return Ok(false);
    }
    state.guard.check_host(headers)?;
    state.guard.check_origin(headers)?;
    if !is_safe(method) {
        require_origin(&state.guard, headers, method, path)?;
    }
    Ok(true)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// A state-changing browser request must name its origin (one of ours: `check_origin` already
/// refused any other).
fn require_origin(
    guard: &Guard,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    guard.check_origin(headers)?;
    if headers.contains_key(hyper::header::ORIGIN) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_origin",
            format!("{method} {path} from a browser session needs a same-origin `Origin` header"),
        ))
    }
}

/// Answers a dashboard request (Host and Origin rules first, like every API route).
pub(crate) async fn handle(state: &State, parts: &Parts, body: Incoming) -> Response<RespBody> {
    let path = parts.uri.path().to_owned();
    let result = async {
        state.guard.check_host(&parts.headers)?;
        state.guard.check_origin(&parts.headers)?;
        route(state, parts, body, &path).await
    }
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => error_page(&e),
    }
}

async fn route(
    state: &State,
    parts: &Parts,
    body: Incoming,
    path: &str,
) -> Result<Response<RespBody>, ApiError> {
    let method = &parts.method;
    let query = parts.uri.query().unwrap_or_default();
    let session = state.sessions.live_session(&parts.headers);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["ui", "assets", "dash.css"]) => Ok(asset("text/css; charset=utf-8", CSS)),
        (Method::GET, ["ui", "assets", "dash.js"]) => {
            Ok(asset("text/javascript; charset=utf-8", JS))
        }
        (Method::GET, [""]) => match session {
            Some(_) => list::page(&state.engine, query).await,
            None => Ok(html_response(StatusCode::OK, &login_page(None))),
        },
        (Method::POST, ["login"]) => login(state, parts, body).await,
        (Method::POST, ["logout"]) => {
            require_origin(&state.guard, &parts.headers, method, path)?;
            if let Some(id) = &session {
                state.sessions.remove(id);
            }
            let mut resp = redirect("/");
            set_header(&mut resp, SET_COOKIE, &session::clear_cookie());
            Ok(resp)
        }
        (Method::GET, _) if session.is_none() => {
            if segments.first() == Some(&"ui") && is_fragment(&segments) {
                Err(no_session())
            } else {
                Ok(redirect("/"))
            }
        }
        (Method::GET, ["ui", "rows"]) => list::rows(&state.engine, query).await,
        (Method::GET, ["ui", "new"]) => new::page(&state.engine, query).await,
        (Method::GET, ["ui", "specs"]) => new::specs(query).await,
        (Method::GET, ["ui", "runs", id]) => run::page(&state.engine, parse_run_id(id)?).await,
        (Method::GET, ["ui", "runs", id, "live"]) => {
            run::live(&state.engine, parse_run_id(id)?).await
        }
        (Method::GET, ["ui", "runs", id, "review"]) => {
            review::page(&state.engine, parse_run_id(id)?, query).await
        }
        (Method::GET, ["ui", "runs", id, "artifacts", aid]) => {
            run::artifact(&state.engine, parse_run_id(id)?, aid).await
        }
        (Method::GET, ["ui", "runs", id, "analysis", name]) => {
            run::analysis_file(&state.engine, parse_run_id(id)?, name).await
        }
        _ if session.is_none() => Err(no_session()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no dashboard page for {method} {path}"),
        )),
    }
}

/// Fragments are fetched by the page's script: without a session they answer 401, not a
/// redirect to the login page.
fn is_fragment(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["ui", "rows"] | ["ui", "specs"] | ["ui", "runs", _, "live"]
    )
}

fn no_session() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_session",
        "no dashboard session: log in at /",
    )
}

/// `POST /login` with a form-encoded `token`: a right token starts a session.
async fn login(
    state: &State,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<RespBody>, ApiError> {
    require_origin(&state.guard, &parts.headers, &parts.method, "/login")?;
    let bytes = collect_body(body, LOGIN_BODY_MAX).await?;
    let text = String::from_utf8_lossy(&bytes);
    let token = crate::query::parse(&text)
        .map_err(ApiError::bad_request)?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if !crate::server::auth::constant_time_eq(state.guard.token.as_bytes(), token.as_bytes()) {
        tracing::warn!("refused a dashboard login with a wrong token");
        let message = if token.is_empty() {
            "Enter the daemon's token."
        } else {
            "That is not the daemon's token."
        };
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            &login_page(Some(message)),
        ));
    }
    let id = state
        .sessions
        .create()
        .map_err(|e| ApiError::internal(format!("cannot start a session: {e}")))?;
    let mut resp = redirect("/");
    set_header(&mut resp, SET_COOKIE, &session::set_cookie(&id));
    Ok(resp)
}

fn login_page(error: Option<&str>) -> String {
    let mut body = String::from(
        "<section class=\"login\"><h1>Log in to loopd</h1>\
         <p>Paste the daemon's token (from <code>$LOOPD_TOKEN</code> or the <code>token</code> file of its data dir). \
         It is sent once; the browser keeps a session cookie, never the token.</p>",
    );
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            html::esc(e)
        ));
    }
    body.push_str(
        "<form method=\"post\" action=\"/login\" autocomplete=\"off\">\
         <label for=\"token\">Token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" required autofocus>\
         <button type=\"submit\" id=\"login\">Log in</button></form></section>",
    );
    html::page("Log in", false, &body)
}

/// Headers every dashboard page carries: no caching, no framing, scripts and styles only from
/// the daemon itself. The referrer policy is `same-origin`, not `no-referrer`: under
/// `no-referrer` Chromium sends `Origin: null` with form posts, which the origin rule refuses.
fn secure(resp: &mut Response<RespBody>) {
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
}

/// An HTML response.
pub(crate) fn html_response(status: StatusCode, html: &str) -> Response<RespBody> {
    let mut resp = body::with_type(
        status,
        "text/html; charset=utf-8",
        body::full(html.to_owned()),
    );
    secure(&mut resp);
    resp
}

/// A plain-text response (logs, artifacts).
pub(crate) fn text_response(text: String) -> Response<RespBody> {
    let mut resp = body::with_type(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        body::full(text),
    );
    secure(&mut resp);
    resp
}

fn asset(content_type: &'static str, text: &'static str) -> Response<RespBody> {
    let mut resp = body::with_type(StatusCode::OK, content_type, body::full(text));
    secure(&mut resp);
    resp
}

fn redirect(to: &'static str) -> Response<RespBody> {
    let mut resp = body::with_type(StatusCode::SEE_OTHER, "text/plain", body::full(""));
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    secure(&mut resp);
    resp
}

fn set_header(resp: &mut Response<RespBody>, name: hyper::header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

fn error_page(e: &ApiError) -> Response<RespBody> {
    let mut body = format!(
        "<section class=\"error-page\"><h1>{} {}</h1><p class=\"error\" role=\"alert\">{}</p>",
        e.status.as_u16(),
        html::esc(e.status.canonical_reason().unwrap_or("error")),
        html::esc(&e.message)
    );
    body.push_str("<p><a href=\"/\">Back to the runs</a></p></section>");
    html_response(e.status, &html::page("Error", false, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_paths_are_told_from_api_paths() {
        for p in ["/", "/login", "/logout", "/ui/runs/x", "/ui/assets/dash.js"] {
            assert!(owns(p), "{p}");
        }
        for p in ["/runs", "/health", "/runs/x/events", "/uix", "/login/x"] {
            assert!(!owns(p), "{p}");
        }
    }

    #[test]
    fn the_login_page_never_holds_a_token_value() {
        let p = login_page(Some("<bad>"));
        assert!(p.contains("type=\"password\""));
        assert!(p.contains("&lt;bad&gt;"));
        assert!(!p.contains("value="));
    }
}
