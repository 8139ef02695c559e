//! Exit codes: the one place that maps outcomes and errors to the process exit status
//! (documented in the README's table).

use loop_http::ClientError;

/// Success (`wait`: the run completed).
pub(crate) const OK: i32 = 0;
/// `wait`: the run failed.
pub(crate) const RUN_FAILED: i32 = 1;
/// `wait`: the run was canceled.
pub(crate) const RUN_CANCELED: i32 = 2;
/// Bad command line (unknown flag, missing argument, bad value).
pub(crate) const USAGE: i32 = 64;
/// The daemon rejected the request as invalid (bad config value, missing spec, ...).
pub(crate) const INVALID: i32 = 65;
/// The run (or step) does not exist.
pub(crate) const NOT_FOUND: i32 = 66;
/// The daemon cannot be reached, or lacks a program the request needs (`gh`).
pub(crate) const UNAVAILABLE: i32 = 69;
/// Anything else (daemon error, unexpected answer, local IO).
pub(crate) const SOFTWARE: i32 = 70;
/// The daemon refused the token.
pub(crate) const NO_PERMISSION: i32 = 77;

/// A command's own verdict beyond success (e.g. `wait` on a failed run).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Verdict {
    pub(crate) code: i32,
    pub(crate) message: String,
}

/// Prints the error (if any) and returns the exit code.
pub(crate) fn report(result: anyhow::Result<()>) -> i32 {
    let Err(err) = result else {
        return OK;
    };
    if let Some(v) = err.downcast_ref::<Verdict>() {
        if !v.message.is_empty() {
            eprintln_error(&v.message);
        }
        return v.code;
    }
    let code = match err.downcast_ref::<ClientError>() {
        Some(ClientError::Connect { .. }) => UNAVAILABLE,
        Some(ClientError::Unauthorized { .. }) => NO_PERMISSION,
        Some(ClientError::Api { status: 404, .. }) => NOT_FOUND,
        // A program the daemon needs for the request is missing (`gh` for `loopctl pr`).
        Some(ClientError::Api { status: 503, .. }) => UNAVAILABLE,
        Some(ClientError::Api { status, .. }) if (400..500).contains(status) => INVALID,
        Some(ClientError::InvalidUrl { .. }) => USAGE,
        _ => SOFTWARE,
    };
    eprintln_error(&format!("{err:#}"));
    code
}

fn eprintln_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "loopctl: {message}");
}
