//! What an agent invocation's [`ExecOutcome`] means: success, or which kind of failure, with a
//! reason a user can act on. Pure; the engine uses it to decide between done, retry and fail.
//!
//! The Claude CLI's exit code is not a verdict: an API failure ends with `is_error: true` in
//! a `result` line (often with exit code 1, sometimes 0), an interrupted CLI may exit 0 without
//! any `result` line, and start-up refusals only print to stderr. So the `result` line decides
//! when there is one, and the texts are inspected when there is not.

use crate::backend::{AgentResult, ExecOutcome, Termination};

/// Why an agent invocation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// It ran past its total or idle timeout and was stopped.
    Timeout,
    /// It was stopped because the run was canceled or the daemon shut down.
    Canceled,
    /// The API refused the credentials (HTTP 401/403, invalid API key, expired login).
    AuthRefused,
    /// The Claude CLI refused `--dangerously-skip-permissions` because it runs as root without
    /// `IS_SANDBOX=1`.
    RootRefused,
    /// A failure that may go away by itself: overload (529), rate limit (429), server errors
    /// (5xx), connection errors, API timeouts.
    Transient {
        /// The HTTP status, when known.
        status: Option<u16>,
    },
    /// The account's usage limit is used up (Claude Code's `api_error: usage_limit_reached`).
    /// Retrying before the reset only fails again: the loop waits for it instead.
    UsageLimit {
        /// When the limit resets (Unix seconds), when the agent said.
        resets_at: Option<i64>,
    },
    /// The agent exited successfully without its final `result` line (it was interrupted).
    NoResult,
    /// The agent reported an error of its own (`is_error: true`, neither transient nor auth).
    AgentError,
    /// The agent exited with this non-zero code, without saying more.
    ExitCode(i32),
}

impl FailureKind {
    /// True when running the same invocation again, after a pause, may well succeed.
    /// Timeouts are not transient: the same work would most likely time out again.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::NoResult)
    }
}

/// The verdict on one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The agent did its job (whether it completed the plan is decided elsewhere).
    Success,
    /// It failed.
    Failure {
        /// Why.
        kind: FailureKind,
        /// A reason a user can read as the run's failure reason.
        message: String,
    },
}

impl Verdict {
    /// The standard judgement of `outcome`. `expect_result_line` is true for agents that must
    /// end with a stream-json `result` line (the Claude CLI); for other agents exit code 0 is
    /// success. A `result` line, when one came, decides in both cases; timeouts and cancels
    /// are failures whatever the exit code.
    pub fn of(outcome: &ExecOutcome, expect_result_line: bool) -> Self {
        judge(outcome, expect_result_line)
    }

    /// [`Verdict::of`] for an agent whose credentials are `credentials` (what an auth failure
    /// tells the user to check, e.g. `OPENAI_API_KEY`), instead of the Claude CLI's
    /// `ANTHROPIC_API_KEY`.
    pub fn of_agent(outcome: &ExecOutcome, expect_result_line: bool, credentials: &str) -> Self {
        judge_with(outcome, expect_result_line, credentials)
    }

    /// True for [`Verdict::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }

    fn failure(kind: FailureKind, message: impl Into<String>) -> Self {
        Self::Failure {
            kind,
            message: message.into(),
        }
    }
}

/// What to do about the root refusal, shared by the pre-check and the verdict.
pub(crate) const ROOT_REFUSAL_FIX: &str = "set IS_SANDBOX=1 in loopd's environment (`export IS_SANDBOX=1`) or run loopd as a non-root user";

/// Judges `outcome`. `expect_result_line` is true for agents that must end with a stream-json
/// `result` line (the Claude CLI); for other agents exit code 0 is success. A `result` line,
/// when one came, decides in both cases.
pub(crate) fn judge(outcome: &ExecOutcome, expect_result_line: bool) -> Verdict {
    judge_with(outcome, expect_result_line, CLAUDE_CREDENTIALS)
}

/// What a Claude auth failure tells the user to check.
const CLAUDE_CREDENTIALS: &str = "ANTHROPIC_API_KEY (or log the CLI in again)";

/// [`judge`] naming `credentials` in auth failures.
fn judge_with(outcome: &ExecOutcome, expect_result_line: bool, credentials: &str) -> Verdict {
    let secs = outcome.duration_ms / 1000;
    match outcome.termination {
        Some(Termination::TimedOut) => {
            return Verdict::failure(
                FailureKind::Timeout,
                format!(
                    "agent timed out after {secs} s (exit {})",
                    outcome.exit_code
                ),
            );
        }
        Some(Termination::IdleTimedOut) => {
            return Verdict::failure(
                FailureKind::Timeout,
                format!(
                    "agent printed nothing for too long and was stopped after {secs} s (idle timeout, exit {})",
                    outcome.exit_code
                ),
            );
        }
        Some(Termination::Canceled) => {
            return Verdict::failure(
                FailureKind::Canceled,
                format!(
                    "agent was canceled after {secs} s (exit {})",
                    outcome.exit_code
                ),
            );
        }
        Some(Termination::Exited | Termination::Signaled) | None => {}
    }
    if let Some(result) = &outcome.result {
        return judge_result(result, outcome, credentials);
    }
    if is_root_refusal(&outcome.stderr_tail) || is_root_refusal(&outcome.output_text) {
        return root_refused();
    }
    if outcome.exit_code == 0 {
        if !expect_result_line {
            return Verdict::Success;
        }
        return Verdict::failure(
            FailureKind::NoResult,
            format!(
                "agent exited (code 0) without its final result line; it was probably interrupted{}",
                detail_suffix(&outcome.stderr_tail)
            ),
        );
    }
    let text = format!("{}\n{}", outcome.stderr_tail, outcome.output_text);
    if let Some(verdict) = classify_text(&text, None, credentials) {
        return verdict;
    }
    let what = match outcome.termination {
        Some(Termination::Signaled) => "agent was killed by a signal",
        _ => "agent failed",
    };
    Verdict::failure(
        FailureKind::ExitCode(outcome.exit_code),
        format!(
            "{what} (exit {}){}",
            outcome.exit_code,
            detail_suffix(&outcome.stderr_tail)
        ),
    )
}

fn judge_result(result: &AgentResult, outcome: &ExecOutcome, credentials: &str) -> Verdict {
    if !result.is_error {
        return Verdict::Success;
    }
    if result.api_error.as_deref() == Some("usage_limit_reached") {
        let when = result.usage_limit_resets_at.map_or_else(
            || "no reset time given".to_owned(),
            |t| format!("resets at Unix time {t}"),
        );
        return Verdict::failure(
            FailureKind::UsageLimit {
                resets_at: result.usage_limit_resets_at,
            },
            format!(
                "the account's usage limit is reached ({when}): {}",
                snippet(&result.text)
            ),
        );
    }
    let status = result
        .api_error_status
        .or_else(|| api_status_in(&result.text));
    if let Some(verdict) = status.and_then(|s| classify_status(s, credentials)) {
        return verdict;
    }
    let text = format!("{}\n{}", result.text, outcome.stderr_tail);
    if is_root_refusal(&text) {
        return root_refused();
    }
    if let Some(verdict) = classify_text(&text, status, credentials) {
        return verdict;
    }
    let subtype = result.subtype.as_deref().unwrap_or("error");
    let said = if result.text.trim().is_empty() {
        detail_suffix(&outcome.stderr_tail)
    } else {
        format!(": {}", snippet(&result.text))
    };
    Verdict::failure(
        FailureKind::AgentError,
        format!("agent reported an error ({subtype}){said}"),
    )
}

fn root_refused() -> Verdict {
    Verdict::failure(
        FailureKind::RootRefused,
        format!(
            "the Claude CLI refuses --dangerously-skip-permissions when run as root: {ROOT_REFUSAL_FIX}"
        ),
    )
}

fn classify_status(status: u16, credentials: &str) -> Option<Verdict> {
    let transient = |what: &str| {
        Verdict::failure(
            FailureKind::Transient {
                status: Some(status),
            },
            format!("{what} (HTTP {status}); the agent gave up after its own retries"),
        )
    };
    match status {
        401 => Some(Verdict::failure(
            FailureKind::AuthRefused,
            format!("the API key was refused (HTTP 401): check {credentials}"),
        )),
        403 => Some(Verdict::failure(
            FailureKind::AuthRefused,
            format!(
                "the API refused access (HTTP 403): check {credentials} and the account's permissions"
            ),
        )),
        429 => Some(transient("the API rate limit was hit")),
        529 => Some(transient("the API is overloaded")),
        408 | 500..=599 => Some(transient("the API failed")),
        _ => None,
    }
}

/// Recognises auth and transient failures in free text (stderr, result text).
fn classify_text(text: &str, status: Option<u16>, credentials: &str) -> Option<Verdict> {
    let lower = text.to_lowercase();
    const AUTH: &[&str] = &[
        "invalid x-api-key",
        "invalid api key",
        "invalid_api_key",
        "authentication_error",
        "authentication failed",
        "oauth token has expired",
        "please run /login",
        "unauthorized",
    ];
    const TRANSIENT: &[&str] = &[
        "overloaded",
        "rate limit",
        "rate_limit",
        "too many requests",
        "econnrefused",
        "econnreset",
        "etimedout",
        "enotfound",
        "eai_again",
        "connection error",
        "connection refused",
        "connection reset",
        "socket hang up",
        "network error",
        "fetch failed",
        "request timed out",
        "api_timeout",
        "internal server error",
        "service unavailable",
        "bad gateway",
        "gateway timeout",
    ];
    if AUTH.iter().any(|p| lower.contains(p)) {
        return Some(Verdict::failure(
            FailureKind::AuthRefused,
            format!(
                "the API refused the credentials: check {credentials}{}",
                detail_suffix(text)
            ),
        ));
    }
    if TRANSIENT.iter().any(|p| lower.contains(p)) {
        return Some(Verdict::failure(
            FailureKind::Transient { status },
            format!(
                "the API could not be reached or was overloaded{}",
                detail_suffix(text)
            ),
        ));
    }
    None
}

/// True when `text` holds the Claude CLI's refusal to skip permissions as root.
pub(crate) fn is_root_refusal(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("root/sudo privileges")
        || (lower.contains("dangerously-skip-permissions") && lower.contains("root"))
}

/// The status in an `API Error: 529 {...}` text.
fn api_status_in(text: &str) -> Option<u16> {
    let rest = &text[text.find("API Error:")? + "API Error:".len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|s| (100..600).contains(s))
}

/// `": <last lines of text>"`, or nothing when `text` is blank.
fn detail_suffix(text: &str) -> String {
    let s = snippet(text);
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// The last few non-empty lines of `text`, joined, at most 300 characters (its end).
fn snippet(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(3)..].join(" | ");
    let count = joined.chars().count();
    if count <= 300 {
        joined
    } else {
        let tail: String = joined.chars().skip(count - 299).collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExecOutcome {
        ExecOutcome {
            exit_code: code,
            termination: Some(Termination::Exited),
            ..ExecOutcome::default()
        }
    }

    fn with_result(code: i32, is_error: bool, status: Option<u16>, text: &str) -> ExecOutcome {
        ExecOutcome {
            result: Some(AgentResult {
                subtype: Some("success".into()),
                is_error,
                text: text.into(),
                api_error_status: status,
                ..AgentResult::default()
            }),
            ..exited(code)
        }
    }

    #[test]
    fn usage_limit_reached_is_its_own_kind_with_the_reset() {
        let mut out = with_result(
            1,
            true,
            Some(429),
            "You've hit your 5-hour limit · resets 6:40pm (UTC)",
        );
        if let Some(r) = out.result.as_mut() {
            r.api_error = Some("usage_limit_reached".into());
            r.usage_limit_resets_at = Some(1_796_150_446);
        }
        let v = judge(&out, true);
        assert_eq!(
            kind(&v),
            Some(&FailureKind::UsageLimit {
                resets_at: Some(1_796_150_446)
            })
        );
        // A plain 429 (an API key's rate limit, no usage limit) stays transient.
        let v = judge(
            &with_result(1, true, Some(429), "API Error: Request rejected (429)"),
            true,
        );
        assert!(matches!(
            kind(&v),
            Some(FailureKind::Transient { status: Some(429) })
        ));
    }

    fn kind(v: &Verdict) -> Option<&FailureKind> {
        match v {
            Verdict::Success => None,
            Verdict::Failure { kind, .. } => Some(kind),
        }
    }

    fn message(v: &Verdict) -> &str {
        match v {
            Verdict::Success => "",
            Verdict::Failure { message, .. } => message,
        }
    }

    #[test]
    fn successful_result_is_success_whatever_the_exit_code() {
        assert!(judge(&with_result(0, false, None, "Completed X."), true).is_success());
        assert!(judge(&with_result(1, false, None, "Completed X."), true).is_success());
    }

    #[test]
    fn api_statuses() {
        let v = judge(&with_result(1, true, Some(401), "API Error: 401"), true);
        assert_eq!(kind(&v), Some(&FailureKind::AuthRefused));
        assert!(message(&v).contains("HTTP 401"));
        assert!(message(&v).contains("ANTHROPIC_API_KEY"));

        let v = judge(&with_result(1, true, Some(529), "API Error: 529"), true);
        assert_eq!(
            kind(&v),
            Some(&FailureKind::Transient { status: Some(529) })
        );
        assert!(kind(&v).is_some_and(FailureKind::is_transient));
        assert!(message(&v).contains("overloaded"));

        for status in [429, 500, 502, 503] {
            let v = judge(&with_result(0, true, Some(status), ""), true);
            assert_eq!(
                kind(&v),
                Some(&FailureKind::Transient {
                    status: Some(status)
                }),
                "{status}"
            );
        }
        let v = judge(&with_result(1, true, Some(403), ""), true);
        assert_eq!(kind(&v), Some(&FailureKind::AuthRefused));
    }

    #[test]
    fn status_read_from_the_result_text() {
        let text = r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let v = judge(&with_result(1, true, None, text), true);
        assert_eq!(
            kind(&v),
            Some(&FailureKind::Transient { status: Some(529) })
        );
        let text = r#"Invalid API key · Please run /login"#;
        let v = judge(&with_result(1, true, None, text), true);
        assert_eq!(kind(&v), Some(&FailureKind::AuthRefused));
    }

    #[test]
    fn other_errors_are_agent_errors() {
        let mut outcome = with_result(1, true, None, "Reached the maximum number of turns");
        if let Some(r) = outcome.result.as_mut() {
            r.subtype = Some("error_max_turns".into());
        }
        let v = judge(&outcome, true);
        assert_eq!(kind(&v), Some(&FailureKind::AgentError));
        assert!(!FailureKind::AgentError.is_transient());
        assert_eq!(
            message(&v),
            "agent reported an error (error_max_turns): Reached the maximum number of turns"
        );
    }

    #[test]
    fn no_result_line() {
        let v = judge(&exited(0), true);
        assert_eq!(kind(&v), Some(&FailureKind::NoResult));
        assert!(message(&v).contains("without its final result line"));
        // Plain commands succeed on exit 0.
        assert!(judge(&exited(0), false).is_success());

        let mut failed = exited(2);
        failed.stderr_tail = "boom\nreally bad\n".into();
        for expect in [true, false] {
            let v = judge(&failed, expect);
            assert_eq!(kind(&v), Some(&FailureKind::ExitCode(2)));
            assert_eq!(message(&v), "agent failed (exit 2): boom | really bad");
        }
    }

    #[test]
    fn stderr_texts() {
        let mut o = exited(1);
        o.stderr_tail = "Error: --dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n".into();
        let v = judge(&o, true);
        assert_eq!(kind(&v), Some(&FailureKind::RootRefused));
        assert!(message(&v).contains("IS_SANDBOX=1"));
        assert!(
            message(&v).starts_with(
                "the Claude CLI refuses --dangerously-skip-permissions when run as root"
            )
        );

        o.stderr_tail = "Error: connect ECONNREFUSED 127.0.0.1:443".into();
        assert_eq!(
            kind(&judge(&o, true)),
            Some(&FailureKind::Transient { status: None })
        );
        o.stderr_tail = "Connection error.".into();
        assert_eq!(
            kind(&judge(&o, false)),
            Some(&FailureKind::Transient { status: None })
        );
        o.stderr_tail = "invalid x-api-key".into();
        assert_eq!(kind(&judge(&o, true)), Some(&FailureKind::AuthRefused));
    }

    #[test]
    fn terminations() {
        let mut o = exited(124);
        o.termination = Some(Termination::TimedOut);
        o.duration_ms = 61_500;
        let v = judge(&o, true);
        assert_eq!(kind(&v), Some(&FailureKind::Timeout));
        assert_eq!(message(&v), "agent timed out after 61 s (exit 124)");
        assert!(!FailureKind::Timeout.is_transient());

        o.termination = Some(Termination::IdleTimedOut);
        let v = judge(&o, true);
        assert_eq!(kind(&v), Some(&FailureKind::Timeout));
        assert!(message(&v).contains("idle timeout"));

        let mut o = exited(130);
        o.termination = Some(Termination::Canceled);
        assert_eq!(kind(&judge(&o, false)), Some(&FailureKind::Canceled));

        let mut o = exited(137);
        o.termination = Some(Termination::Signaled);
        let v = judge(&o, false);
        assert_eq!(kind(&v), Some(&FailureKind::ExitCode(137)));
        assert!(message(&v).contains("killed by a signal"));
    }

    #[test]
    fn long_texts_are_shortened() {
        let long = "x".repeat(1000);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), 300);
        assert!(s.starts_with('…'));
        assert_eq!(snippet("  \n\n"), "");
    }
}
