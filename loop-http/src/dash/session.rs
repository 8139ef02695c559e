//! Browser sessions of the dashboard: the login page trades the token for a random session id,
//! kept only in the daemon's memory and handed to the browser as an `HttpOnly`,
//! `SameSite=Strict` cookie. Sessions expire, and logging out forgets one at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use hyper::header::COOKIE;

/// Name of the session cookie.
pub(crate) const COOKIE_NAME: &str = "loopd_session";
/// How long a session lives after login.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept at once; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 1024;

/// The live sessions: id → expiry.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Starts a session and returns its id (64 hex characters from the OS generator).
    pub(crate) fn create(&self) -> std::io::Result<String> {
        let id = crate::server::auth::generate_token()?;
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expiry| *expiry > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), now + SESSION_TTL);
        Ok(id)
    }

    /// The session id of the request's cookie when that session is live.
    pub(crate) fn live_session(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE_NAME)?;
        let live = self.lock();
        match live.get(&id) {
            Some(expiry) if *expiry > Instant::now() => Some(id),
            _ => None,
        }
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding this lock cannot leave the map inconsistent (every change is
        // one insert or remove), so a poisoned lock is used as it is.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands a session to the browser.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn a_created_session_is_found_until_removed() {
        let s = Sessions::default();
        let id = s.create().expect("session");
        assert_eq!(id.len(), 64);
        let h = with_cookie(&format!("other=1; {COOKIE_NAME}={id}"));
        assert_eq!(s.live_session(&h).as_deref(), Some(id.as_str()));
        s.remove(&id);
        assert_eq!(s.live_session(&h), None);
    }

    #[test]
    fn unknown_or_empty_cookies_are_no_session() {
        let s = Sessions::default();
        s.create().expect("session");
        assert_eq!(s.live_session(&with_cookie("loopd_session=abc")), None);
        assert_eq!(s.live_session(&with_cookie("loopd_session=")), None);
        assert_eq!(s.live_session(&HeaderMap::new()), None);
    }

    #[test]
    fn expired_sessions_are_refused() {
        let s = Sessions::default();
        let id = s.create().expect("session");
        s.lock()
            .insert(id.clone(), Instant::now() - Duration::from_secs(1));
        assert_eq!(
            s.live_session(&with_cookie(&format!("{COOKIE_NAME}={id}"))),
            None
        );
    }

    #[test]
    fn cookies_carry_the_security_attributes() {
        let c = set_cookie("x");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
