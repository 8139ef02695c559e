//! Lenient parsing of the Claude CLI's `--output-format stream-json` lines.
//!
//! The CLI's output is not always valid JSON for serde: it writes lone UTF-16 surrogate escapes
//! (`"\udcff"`), lines can be hundreds of KB, and field names drift between versions. So every
//! field is optional, a line that does not parse is kept as raw text, and nothing here can fail
//! a step.

use serde_json::Value;

use crate::backend::{AgentResult, ExecSignal};
use crate::domain::AgentUsage;

/// What one line of agent output is.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamLine {
    /// The final `{"type":"result",...}` line.
    Result(AgentResult),
    /// A `{"type":"result",...}` line whose fields have the wrong types (`is_error` not a
    /// boolean, `result` not a string, ...): it is no valid result line, and it cancels one
    /// that came before it, so an agent whose last word is malformed is judged as having
    /// given no result (issue 13: such a line used to count as success).
    MalformedResult {
        /// Which field was wrong, e.g. `is_error is "maybe", not a boolean`.
        problem: String,
    },
    /// A `{"type":"rate_limit_event",...}` line, or an assistant error message carrying
    /// `api_error_params.rate_limit_info`: what the API said about the account's limit.
    RateLimit(RateLimitInfo),
    /// A `{"type":"system","subtype":"api_retry",...}` line: the CLI retries an API call.
    ApiRetry(ApiRetry),
    /// The `{"type":"system","subtype":"init",...}` line that opens a session.
    Init {
        /// The `model` the CLI runs, if it named one.
        model: Option<String>,
    },
    /// Any other JSON object (`init`, `assistant`, `user`, ...); `kind` is its `type`.
    Other {
        /// The `type` field, if any.
        kind: Option<String>,
    },
    /// Not JSON (plain text, or JSON too broken to repair).
    Raw,
}

/// The `rate_limit_info` of a `rate_limit_event` (Claude Code with a subscription login):
/// `{"status":"rejected","resetsAt":1796150446,"rateLimitType":"five_hour",...}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// `status`: `allowed`, `allowed_warning` or `rejected` (the limit is used up).
    pub status: Option<String>,
    /// `resetsAt`: when the limit resets, in Unix seconds.
    pub resets_at: Option<i64>,
    /// `rateLimitType`: `five_hour`, `seven_day`, ...
    pub limit_type: Option<String>,
}

impl RateLimitInfo {
    /// True when the limit is used up.
    pub fn is_rejected(&self) -> bool {
        self.status.as_deref() == Some("rejected")
    }
}

/// An API retry announced by the CLI. Every field is optional: names vary between versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiRetry {
    /// `attempt`.
    pub attempt: Option<u64>,
    /// `max_retries`.
    pub max_retries: Option<u64>,
    /// `retry_delay_ms` (or `delay_ms`).
    pub delay_ms: Option<u64>,
    /// `error_status` (or `status`).
    pub error_status: Option<u16>,
    /// `error` (a string, or the `type`/`message` of an error object).
    pub error: Option<String>,
}

impl From<ApiRetry> for ExecSignal {
    fn from(r: ApiRetry) -> Self {
        ExecSignal::ApiRetry {
            attempt: r.attempt,
            max_retries: r.max_retries,
            delay_ms: r.delay_ms,
            error_status: r.error_status,
            error: r.error,
        }
    }
}

/// Classifies one line (without its newline). Never fails: anything unparseable is
/// [`StreamLine::Raw`].
pub fn parse_line(line: &[u8]) -> StreamLine {
    let trimmed = line.trim_ascii();
    if !trimmed.starts_with(b"{") {
        return StreamLine::Raw;
    }
    match parse_value(trimmed) {
        Some(value) => classify(&value),
        None => StreamLine::Raw,
    }
}

/// Parses one line of agent output as JSON, repairing what the CLI is known to get wrong:
/// invalid UTF-8 and lone surrogate escapes (`"\udcff"`), both of which serde_json rejects
/// (they become U+FFFD). `None` when the line is not JSON even after the repair. This is the
/// one stream-json parser: the engine classifies lines with it ([`parse_line`]) and clients
/// such as `loopctl` render them from the value it returns.
pub fn parse_value(bytes: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return Some(v);
    }
    let text = String::from_utf8_lossy(bytes);
    let repaired = replace_lone_surrogates(&text);
    let candidate = repaired.as_deref().unwrap_or(&text);
    serde_json::from_str::<Value>(candidate).ok()
}

/// Replaces `\uD800`-`\uDFFF` escapes that are not part of a valid surrogate pair with
/// `\ufffd`. `None` when there was nothing to replace.
pub fn replace_lone_surrogates(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = b.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let is_high = |c: u32| (0xD800..0xDC00).contains(&c);
    let is_low = |c: u32| (0xDC00..0xE000).contains(&c);
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            // Another escape (`\\`, `\"`, `\n`, ...): skip it whole so `\\u` is not misread.
            i += 2;
            continue;
        }
        let Some(code) = hex4(i + 2) else {
            i += 2;
            continue;
        };
        if is_high(code)
            && b.get(i + 6) == Some(&b'\\')
            && b.get(i + 7) == Some(&b'u')
            && hex4(i + 8).is_some_and(is_low)
        {
            i += 12;
            continue;
        }
        if is_high(code) || is_low(code) {
            // `i` is at an ASCII backslash, so slicing here is on a char boundary.
            out.push_str(&text[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
            continue;
        }
        i += 6;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

fn classify(v: &Value) -> StreamLine {
    let kind = v.get("type").and_then(Value::as_str);
    let subtype = v.get("subtype").and_then(Value::as_str);
    match (kind, subtype) {
        (Some("result"), _) => match result_problem(v) {
            None => StreamLine::Result(agent_result(v)),
            Some(problem) => StreamLine::MalformedResult { problem },
        },
        (Some("rate_limit_event"), _) => {
            StreamLine::RateLimit(rate_limit_info(v.get("rate_limit_info")))
        }
        (Some("assistant"), _)
            if v.pointer("/api_error_params/rate_limit_info")
                .is_some_and(Value::is_object) =>
        {
            StreamLine::RateLimit(rate_limit_info(
                v.pointer("/api_error_params/rate_limit_info"),
            ))
        }
        (Some("system"), Some("api_retry")) | (Some("api_retry"), _) => {
            StreamLine::ApiRetry(api_retry(v))
        }
        (Some("system"), Some("init")) => StreamLine::Init {
            model: v
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
        },
        _ => StreamLine::Other {
            kind: kind.map(str::to_owned),
        },
    }
}

fn rate_limit_info(v: Option<&Value>) -> RateLimitInfo {
    let Some(v) = v else {
        return RateLimitInfo::default();
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    RateLimitInfo {
        status: text("status"),
        resets_at: uint(v, "resetsAt").and_then(|n| i64::try_from(n).ok()),
        limit_type: text("rateLimitType"),
    }
}

/// A non-negative integer given as a number or as a numeric string.
fn uint(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn status(v: &Value, keys: &[&str]) -> Option<u16> {
    keys.iter()
        .find_map(|k| uint(v, k))
        .and_then(|n| u16::try_from(n).ok())
}

/// What makes a `result` line invalid: a field the verdict depends on with the wrong type.
/// `None` for a valid line (every field is still optional).
fn result_problem(v: &Value) -> Option<String> {
    let wrong = |key: &str, want: &str| -> Option<String> {
        let value = v.get(key)?;
        let text: String = value.to_string().chars().take(60).collect();
        Some(format!("{key} is {text}, not {want}"))
    };
    let check = |key: &str, ok: fn(&Value) -> bool, want: &str| -> Option<String> {
        match v.get(key) {
            Some(value) if !value.is_null() && !ok(value) => wrong(key, want),
            _ => None,
        }
    };
    check("is_error", Value::is_boolean, "a boolean")
        .or_else(|| check("result", Value::is_string, "a string"))
        .or_else(|| check("subtype", Value::is_string, "a string"))
        .or_else(|| check("usage", Value::is_object, "an object"))
        .or_else(|| check("total_cost_usd", Value::is_number, "a number"))
}

fn agent_result(v: &Value) -> AgentResult {
    let subtype = v.get("subtype").and_then(Value::as_str).map(str::to_owned);
    // Without `is_error`, an `error_*` subtype is the only verdict there is.
    let is_error = v
        .get("is_error")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| subtype.as_deref().is_some_and(|s| s.starts_with("error")));
    let text = match v.get("result") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let usage = v.get("usage").unwrap_or(&Value::Null);
    let cost_usd = ["total_cost_usd", "cost_usd"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_f64));
    AgentResult {
        subtype,
        is_error,
        text,
        api_error_status: status(v, &["api_error_status"]),
        api_error: v
            .get("api_error")
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage_limit_resets_at: None,
        usage: AgentUsage {
            num_turns: uint(v, "num_turns"),
            input_tokens: uint(usage, "input_tokens"),
            output_tokens: uint(usage, "output_tokens"),
            cache_read_input_tokens: uint(usage, "cache_read_input_tokens"),
            cache_creation_input_tokens: uint(usage, "cache_creation_input_tokens"),
            cost_usd,
            is_error,
            duration_api_ms: uint(v, "duration_api_ms"),
            model: reported_model(v),
        },
    }
}

/// The model a `result` line names: its `model` field, else the key of `modelUsage` with the
/// highest `costUSD` (the main model; helpers such as a small model cost less).
fn reported_model(v: &Value) -> Option<String> {
    if let Some(m) = v
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        return Some(m.to_owned());
    }
    let models = v.get("modelUsage")?.as_object()?;
    models
        .iter()
        .map(|(name, u)| {
            let cost = u.get("costUSD").and_then(Value::as_f64).unwrap_or(0.0);
            (name, cost)
        })
        .fold(None::<(&String, f64)>, |best, (name, cost)| match best {
            Some((_, c)) if c >= cost => best,
            _ => Some((name, cost)),
        })
        .map(|(name, _)| name.clone())
}

fn api_retry(v: &Value) -> ApiRetry {
    let error = match v.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(obj @ Value::Object(_)) => obj
            .get("message")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(obj.to_string())),
        _ => None,
    };
    ApiRetry {
        attempt: uint(v, "attempt"),
        max_retries: uint(v, "max_retries"),
        delay_ms: ["retry_delay_ms", "delay_ms", "retry_in_ms"]
            .iter()
            .find_map(|k| uint(v, k)),
        error_status: status(v, &["error_status", "status", "status_code"]),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULT_LINE: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"Completed task 3. 2 tasks remain.","num_turns":3,"duration_ms":5120,"duration_api_ms":4800,"total_cost_usd":0.0123,"usage":{"input_tokens":120,"output_tokens":45,"cache_read_input_tokens":9000,"cache_creation_input_tokens":300},"api_error_status":null,"session_id":"abc"}"#;

    #[test]
    fn result_line_fields() {
        let StreamLine::Result(r) = parse_line(RESULT_LINE.as_bytes()) else {
            panic!("not a result");
        };
        assert_eq!(r.subtype.as_deref(), Some("success"));
        assert!(!r.is_error);
        assert_eq!(r.text, "Completed task 3. 2 tasks remain.");
        assert_eq!(r.api_error_status, None);
        assert_eq!(r.usage.num_turns, Some(3));
        assert_eq!(r.usage.input_tokens, Some(120));
        assert_eq!(r.usage.output_tokens, Some(45));
        assert_eq!(r.usage.cache_read_input_tokens, Some(9000));
        assert_eq!(r.usage.cache_creation_input_tokens, Some(300));
        assert_eq!(r.usage.cost_usd, Some(0.0123));
        assert_eq!(r.usage.duration_api_ms, Some(4800));
    }

    #[test]
    fn result_line_names_the_reported_model() {
        let StreamLine::Result(r) = parse_line(RESULT_LINE.as_bytes()) else {
            panic!("not a result");
        };
        assert_eq!(r.usage.model, None);
        let line = br#"{"type":"result","result":"x","modelUsage":{"claude-haiku-4-5":{"costUSD":0.001},"claude-sonnet-4-5":{"costUSD":0.2}}}"#;
        let StreamLine::Result(r) = parse_line(line) else {
            panic!("not a result");
        };
        assert_eq!(r.usage.model.as_deref(), Some("claude-sonnet-4-5"));
        let line = br#"{"type":"result","result":"x","model":"m-1","modelUsage":{"other":{}}}"#;
        let StreamLine::Result(r) = parse_line(line) else {
            panic!("not a result");
        };
        assert_eq!(r.usage.model.as_deref(), Some("m-1"));
    }

    #[test]
    fn api_error_result_is_error_with_status() {
        let line = r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}","api_error_status":529}"#;
        let StreamLine::Result(r) = parse_line(line.as_bytes()) else {
            panic!("not a result");
        };
        assert!(r.is_error);
        assert!(r.usage.is_error);
        assert_eq!(r.api_error_status, Some(529));
        assert!(r.text.contains("overloaded_error"));
    }

    #[test]
    fn result_line_with_wrong_typed_fields_is_no_result() {
        for (line, field) in [
            (
                r#"{"type":"result","result":{"nested":true},"is_error":"maybe"}"#,
                "is_error",
            ),
            (r#"{"type":"result","result":{"nested":true}}"#, "result"),
            (
                r#"{"type":"result","is_error":false,"result":"x","usage":"lots"}"#,
                "usage",
            ),
            (
                r#"{"type":"result","is_error":false,"result":"x","total_cost_usd":"1"}"#,
                "total_cost_usd",
            ),
        ] {
            let StreamLine::MalformedResult { problem } = parse_line(line.as_bytes()) else {
                panic!("{line} was accepted as a result");
            };
            assert!(problem.starts_with(field), "{problem}");
        }
        // Nulls are absent fields, not wrong ones.
        assert!(matches!(
            parse_line(br#"{"type":"result","is_error":false,"result":null,"usage":null}"#),
            StreamLine::Result(_)
        ));
    }

    /// What Claude Code 2.1.331 printed (logged in with a subscription, `CLAUDE_CODE_OAUTH_TOKEN`)
    /// when the API answered a 429 with `anthropic-ratelimit-unified-status: rejected`: a
    /// `rate_limit_event`, an assistant error message, and a result line without the reset.
    #[test]
    fn usage_limit_lines_of_the_cli() {
        let event = br#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1796150446,"rateLimitType":"five_hour","isUsingOverage":false},"uuid":"u","session_id":"s"}"#;
        let StreamLine::RateLimit(info) = parse_line(event) else {
            panic!("not a rate limit");
        };
        assert!(info.is_rejected());
        assert_eq!(info.resets_at, Some(1_796_150_446));
        assert_eq!(info.limit_type.as_deref(), Some("five_hour"));
        let assistant = br#"{"type":"assistant","message":{"model":"<synthetic>","content":[{"type":"text","text":"You've hit your 5-hour limit \u00b7 resets 6:40pm (UTC)"}]},"error":"rate_limit","is_api_error_message":true,"api_error_status":429,"api_error":"usage_limit_reached","api_error_params":{"rate_limit_info":{"status":"rejected","resetsAt":1796150446,"rateLimitType":"five_hour","isUsingOverage":false}},"api_error_type":"rate_limit_error"}"#;
        let StreamLine::RateLimit(info) = parse_line(assistant) else {
            panic!("not a rate limit");
        };
        assert_eq!(info.resets_at, Some(1_796_150_446));
        let result = br#"{"type":"result","subtype":"success","is_error":true,"num_turns":1,"total_cost_usd":0,"api_error_status":429,"api_error_type":"rate_limit_error","api_error":"usage_limit_reached","result":"You've hit your 5-hour limit \u00b7 resets 6:40pm (UTC)","terminal_reason":"api_error"}"#;
        let StreamLine::Result(r) = parse_line(result) else {
            panic!("not a result");
        };
        assert!(r.is_error);
        assert_eq!(r.api_error.as_deref(), Some("usage_limit_reached"));
        assert_eq!(r.api_error_status, Some(429));
        // An allowed event is information only.
        let allowed = br#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","isUsingOverage":false}}"#;
        let StreamLine::RateLimit(info) = parse_line(allowed) else {
            panic!("not a rate limit");
        };
        assert!(!info.is_rejected());
    }

    #[test]
    fn error_subtype_without_is_error_counts_as_error() {
        let StreamLine::Result(r) = parse_line(br#"{"type":"result","subtype":"error_max_turns"}"#)
        else {
            panic!("not a result");
        };
        assert!(r.is_error);
        assert_eq!(r.text, "");
    }

    #[test]
    fn api_retry_line_becomes_a_signal() {
        let line = br#"{"type":"system","subtype":"api_retry","attempt":2,"max_retries":10,"retry_delay_ms":1200,"error_status":529,"error":"overloaded_error","session_id":"x"}"#;
        let StreamLine::ApiRetry(retry) = parse_line(line) else {
            panic!("not a retry");
        };
        assert_eq!(
            ExecSignal::from(retry),
            ExecSignal::ApiRetry {
                attempt: Some(2),
                max_retries: Some(10),
                delay_ms: Some(1200),
                error_status: Some(529),
                error: Some("overloaded_error".into()),
            }
        );
    }

    #[test]
    fn api_retry_with_other_field_names() {
        let line = br#"{"type":"system","subtype":"api_retry","attempt":"1","delay_ms":500,"status":429,"error":{"type":"rate_limit_error","message":"rate limited"}}"#;
        let StreamLine::ApiRetry(retry) = parse_line(line) else {
            panic!("not a retry");
        };
        assert_eq!(retry.attempt, Some(1));
        assert_eq!(retry.max_retries, None);
        assert_eq!(retry.delay_ms, Some(500));
        assert_eq!(retry.error_status, Some(429));
        assert_eq!(retry.error.as_deref(), Some("rate limited"));
    }

    #[test]
    fn other_and_raw_lines() {
        assert_eq!(
            parse_line(br#"{"type":"system","subtype":"init","cwd":"/w","tools":["Bash"]}"#),
            StreamLine::Init { model: None }
        );
        assert_eq!(
            parse_line(br#"{"type":"system","subtype":"init","model":"claude-opus-4-5"}"#),
            StreamLine::Init {
                model: Some("claude-opus-4-5".into())
            }
        );
        assert_eq!(
            parse_line(br#"{"type":"system","subtype":"compact_boundary"}"#),
            StreamLine::Other {
                kind: Some("system".into())
            }
        );
        assert_eq!(
            parse_line(
                br#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"}]}}"#
            ),
            StreamLine::Other {
                kind: Some("assistant".into())
            }
        );
        assert_eq!(parse_line(b"plain text output"), StreamLine::Raw);
        assert_eq!(parse_line(b"{not json"), StreamLine::Raw);
        assert_eq!(parse_line(b""), StreamLine::Raw);
        assert_eq!(parse_line(b"\xff\xfe{"), StreamLine::Raw);
    }

    #[test]
    fn lone_surrogate_is_repaired() {
        // serde_json refuses this line as it is.
        let line = br#"{"type":"user","message":{"content":"bad \udcff byte"}}"#;
        assert!(serde_json::from_slice::<Value>(line).is_err());
        assert_eq!(
            parse_line(line),
            StreamLine::Other {
                kind: Some("user".into())
            }
        );
        let result = br#"{"type":"result","is_error":false,"result":"done \ud800 here \udcff"}"#;
        let StreamLine::Result(r) = parse_line(result) else {
            panic!("not a result");
        };
        assert_eq!(r.text, "done \u{fffd} here \u{fffd}");
    }

    #[test]
    fn valid_pairs_and_escaped_backslashes_are_kept() {
        assert_eq!(replace_lone_surrogates(r#""\ud83d\ude00""#), None);
        assert_eq!(replace_lone_surrogates(r#""\\udcff""#), None);
        assert_eq!(
            replace_lone_surrogates(r#""a\ud83d\ude00\udcffb""#).as_deref(),
            Some(r#""a\ud83d\ude00\ufffdb""#)
        );
        assert_eq!(
            replace_lone_surrogates(r#""\ud83dx""#).as_deref(),
            Some(r#""\ufffdx""#)
        );
    }

    #[test]
    fn invalid_utf8_inside_json_is_tolerated() {
        let mut line = br#"{"type":"result","is_error":false,"result":"x"#.to_vec();
        line.push(0xff);
        line.extend_from_slice(br#"y"}"#);
        let StreamLine::Result(r) = parse_line(&line) else {
            panic!("not a result");
        };
        assert_eq!(r.text, "x\u{fffd}y");
    }

    #[test]
    fn half_megabyte_line_parses() {
        let big = "x".repeat(500 * 1024);
        let line = format!(
            r#"{{"type":"result","subtype":"success","is_error":false,"result":"{big}\udcff","num_turns":1}}"#
        );
        let StreamLine::Result(r) = parse_line(line.as_bytes()) else {
            panic!("not a result");
        };
        assert_eq!(r.text.len(), 500 * 1024 + '\u{fffd}'.len_utf8());
        assert_eq!(r.usage.num_turns, Some(1));
    }
}
