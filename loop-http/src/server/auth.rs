//! Who may talk to the daemon: a bearer token on every route but `GET /health`, compared in
//! constant time, and DNS-rebinding guards (a browser page on another origin must not reach a
//! daemon on localhost by pointing its own host name at 127.0.0.1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper::header::{AUTHORIZATION, HOST, ORIGIN};
use hyper::{HeaderMap, Method, StatusCode};

use crate::error::ApiError;

/// What a request is checked against.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    /// The bearer token.
    pub(crate) token: String,
    /// Accept any `Host` header (the daemon listens beyond loopback on purpose).
    pub(crate) allow_remote: bool,
    /// The listener's address: its port is part of every accepted `Host` and `Origin`, and
    /// its IP is accepted beside `127.0.0.1`, `localhost` and `[::1]` (a daemon listening on
    /// `127.0.0.2` is reached as `127.0.0.2:<port>`).
    pub(crate) listen: SocketAddr,
}

/// Bytes of randomness in a generated token.
const TOKEN_BYTES: usize = 32;

/// A new random API token: 32 bytes from the operating system's generator (`/dev/urandom`),
/// hex-encoded (64 characters).
pub fn generate_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// differ, so the token cannot be guessed byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Walk the expected bytes even when the lengths differ, so the loop does not stop early.
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(!*x);
        diff |= x ^ y;
    }
    diff == 0
}

impl Guard {
    /// Checks `Host`, `Origin` and (except for `GET /health`) the bearer token.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Result<(), ApiError> {
        self.check_host(headers)?;
        self.check_origin(headers)?;
        if method == Method::GET && path == "/health" {
            return Ok(());
        }
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let message = match given {
            None => "missing bearer token: send `Authorization: Bearer <token>`",
            Some(t) if constant_time_eq(self.token.as_bytes(), t.as_bytes()) => return Ok(()),
            Some(_) => "wrong bearer token",
        };
        tracing::warn!(%method, path, %peer, reason = message, "refused an unauthenticated request");
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            message,
        ))
    }

    fn loopback_hosts(&self) -> Vec<String> {
        let p = self.listen.port();
        let mut hosts = vec![
            format!("127.0.0.1:{p}"),
            format!("localhost:{p}"),
            format!("[::1]:{p}"),
        ];
        // The address it listens on, unless that is a wildcard (0.0.0.0, ::), which no client
        // names as its Host.
        if !self.listen.ip().is_unspecified() {
            let own = self.listen.to_string();
            if !hosts.contains(&own) {
                hosts.push(own);
            }
        }
        hosts
    }

    pub(crate) fn check_host(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.allow_remote {
            return Ok(());
        }
        let host = headers
            .get(HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match host {
            Some(h)
                if self
                    .loopback_hosts()
                    .iter()
                    .any(|ok| ok.eq_ignore_ascii_case(&h)) =>
            {
                Ok(())
            }
            Some(h) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!(
                    "Host `{h}` is not accepted: use {} (or start the daemon with remote access allowed)",
                    self.loopback_hosts().join(", ")
                ),
            )),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                "missing Host header",
            )),
        }
    }

    pub(crate) fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let accepted = self
            .loopback_hosts()
            .iter()
            .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        if accepted {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!("Origin `{origin}` is not allowed"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn guard(allow_remote: bool) -> Guard {
        Guard {
            token: "s3cret".into(),
            allow_remote,
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
        }
    }

    #[test]
    fn the_listening_address_is_an_accepted_host_and_origin() {
        let g = Guard {
            listen: SocketAddr::from(([127, 0, 0, 2], 7711)),
            ..guard(false)
        };
        g.check_host(&headers(&[(HOST, "127.0.0.2:7711")]))
            .expect("its own address");
        g.check_host(&headers(&[(HOST, "127.0.0.1:7711")]))
            .expect("127.0.0.1 still");
        g.check_origin(&headers(&[(ORIGIN, "http://127.0.0.2:7711")]))
            .expect("its own origin");
        assert!(g.check_host(&headers(&[(HOST, "127.0.0.3:7711")])).is_err());
        assert!(g.check_host(&headers(&[(HOST, "127.0.0.2:7712")])).is_err());
        let v6 = Guard {
            listen: "[::1]:7711".parse().expect("addr"),
            ..guard(false)
        };
        assert_eq!(v6.loopback_hosts().len(), 3, "[::1] is listed once");
    }

    fn headers(pairs: &[(hyper::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5555".parse().unwrap()
    }

    #[test]
    fn generated_tokens_are_long_hex_and_differ() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_is_required_except_for_health() {
        let g = guard(false);
        let host = (HOST, "127.0.0.1:7700");
        assert!(
            g.check(
                &Method::GET,
                "/health",
                &headers(std::slice::from_ref(&host)),
                peer()
            )
            .is_ok()
        );
        let e = g
            .check(
                &Method::GET,
                "/runs",
                &headers(std::slice::from_ref(&host)),
                peer(),
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = g
            .check(
                &Method::GET,
                "/runs",
                &headers(&[host.clone(), (AUTHORIZATION, "Bearer nope")]),
                peer(),
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(!e.message.contains("s3cret"));
        assert!(
            g.check(
                &Method::GET,
                "/runs",
                &headers(&[host, (AUTHORIZATION, "Bearer s3cret")]),
                peer()
            )
            .is_ok()
        );
        // POST /health is not the health route.
        let e = g
            .check(
                &Method::POST,
                "/health",
                &headers(&[(HOST, "localhost:7700")]),
                peer(),
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn foreign_hosts_are_refused_unless_remote_is_allowed() {
        for host in ["evil.example:7700", "127.0.0.1:80", "localhost"] {
            let e = guard(false)
                .check(&Method::GET, "/health", &headers(&[(HOST, host)]), peer())
                .unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{host}");
            assert!(e.message.contains(host));
        }
        for host in ["127.0.0.1:7700", "LOCALHOST:7700", "[::1]:7700"] {
            assert!(
                guard(false)
                    .check(&Method::GET, "/health", &headers(&[(HOST, host)]), peer())
                    .is_ok()
            );
        }
        assert!(
            guard(true)
                .check(
                    &Method::GET,
                    "/health",
                    &headers(&[(HOST, "evil.example:7700")]),
                    peer()
                )
                .is_ok()
        );
        assert!(
            guard(false)
                .check(&Method::GET, "/health", &HeaderMap::new(), peer())
                .is_err()
        );
    }

    #[test]
    fn foreign_origins_are_refused_even_with_remote_allowed() {
        let e = guard(true)
            .check(
                &Method::GET,
                "/health",
                &headers(&[(HOST, "127.0.0.1:7700"), (ORIGIN, "http://evil.example")]),
                peer(),
            )
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            guard(false)
                .check(
                    &Method::GET,
                    "/health",
                    &headers(&[(HOST, "127.0.0.1:7700"), (ORIGIN, "http://localhost:7700")]),
                    peer(),
                )
                .is_ok()
        );
    }
}

/// The daemon's default data dir: `$LOOPD_DATA_DIR`, else `$XDG_DATA_HOME/loopd`, else
/// `~/.local/share/loopd`; `None` when none of these variables is set.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("LOOPD_DATA_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(x) = var("XDG_DATA_HOME") {
        return Some(PathBuf::from(x).join("loopd"));
    }
    var("HOME").map(|h| PathBuf::from(h).join(".local/share/loopd"))
}

/// The token file inside a data dir.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("token")
}

/// The daemon's token: `from_env` (`LOOPD_TOKEN`) when set, else the token file of
/// `data_dir`, else a new token written there with mode 0600. Returns the token and whether
/// it was generated now.
pub fn load_or_create_token(
    data_dir: &Path,
    from_env: Option<String>,
) -> std::io::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(t) = from_env.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_owned(), false));
    }
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_owned(), false)),
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = generate_token()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok((token, true))
}

/// A client's token: `flag` (`--token`), else `LOOPD_TOKEN`, else the token file of the
/// default data dir.
pub fn client_token(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("LOOPD_TOKEN").ok())
        .filter(|t| !t.trim().is_empty())
        .or_else(|| std::fs::read_to_string(token_path(&default_data_dir()?)).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod token_file_tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600_and_env_wins() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create_token(dir.path(), None).unwrap();
        assert!(created);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create_token(dir.path(), None).unwrap();
        assert_eq!((again.as_str(), created), (first.as_str(), false));
        let (env, _) = load_or_create_token(dir.path(), Some(" from-env ".into())).unwrap();
        assert_eq!(env, "from-env");
    }
}
