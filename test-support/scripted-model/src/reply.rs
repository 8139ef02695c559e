//! The wire shapes of answers: a Messages API message as one JSON object (non-streaming) or
//! as the SSE event sequence the CLI reads (`message_start`, `content_block_start`,
//! `content_block_delta`, `content_block_stop`, `message_delta`, `message_stop`), and the
//! Anthropic error object.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::script::ToolCall;

/// The content of one answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// Text pieces (one text block; several pieces become several deltas).
    Text(Vec<String>),
    /// Tool calls with their ids.
    Tools(Vec<(String, ToolCall)>),
}

impl Content {
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Self::Text(vec![s.into()])
    }

    fn stop_reason(&self) -> &'static str {
        match self {
            Self::Text(_) => "end_turn",
            Self::Tools(_) => "tool_use",
        }
    }

    /// A rough output token count (4 bytes a token).
    pub(crate) fn output_tokens(&self) -> u64 {
        let bytes: usize = match self {
            Self::Text(pieces) => pieces.iter().map(String::len).sum(),
            Self::Tools(calls) => calls.iter().map(|(_, c)| c.input.to_string().len()).sum(),
        };
        bytes as u64 / 4 + 1
    }

    fn blocks(&self) -> Vec<Value> {
        match self {
            Self::Text(pieces) => vec![json!({"type": "text", "text": pieces.concat()})],
            Self::Tools(calls) => calls
                .iter()
                .map(|(id, c)| json!({"type": "tool_use", "id": id, "name": c.name, "input": c.input}))
                .collect(),
        }
    }
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// The whole message, for a non-streaming request.
pub(crate) fn message(id: &str, model: &str, content: &Content, input_tokens: u64) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content.blocks(),
        "stop_reason": content.stop_reason(),
        "stop_sequence": null,
        "usage": usage(input_tokens, content.output_tokens()),
    })
}

/// One SSE event.
pub(crate) fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The `message_start` event: the first thing a streamed answer sends.
pub(crate) fn message_start(id: &str, model: &str, input_tokens: u64) -> Bytes {
    event(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(input_tokens, 1),
            }
        }),
    )
}

/// The events after `message_start`, one entry per event, in order. A streamed text answer
/// sends one `text_delta` per piece, so a slow answer can pause between entries.
pub(crate) fn content_events(content: &Content) -> Vec<Bytes> {
    let mut out = Vec::new();
    match content {
        Content::Text(pieces) => {
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in pieces {
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ));
        }
        Content::Tools(calls) => {
            for (index, (id, call)) in calls.iter().enumerate() {
                out.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use", "id": id, "name": call.name, "input": {}}}),
                ));
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": call.input.to_string()}}),
                ));
                out.push(event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                ));
            }
        }
    }
    out.push(event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": content.stop_reason(), "stop_sequence": null},
                "usage": {"output_tokens": content.output_tokens()}}),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}

/// The Anthropic error type for an HTTP status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The default error body for `status`.
/// `secs` (Unix seconds) as an RFC 3339 UTC time, e.g. `2026-12-01T18:00:00Z`.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn error_body(status: u16) -> Value {
    let message = match status {
        401 => "invalid x-api-key".to_owned(),
        429 => "Number of requests has exceeded your rate limit (scripted)".to_owned(),
        529 => "Overloaded".to_owned(),
        s => format!("scripted error {s}"),
    };
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(event: &Bytes) -> (String, Value) {
        let text = std::str::from_utf8(event).unwrap();
        let mut lines = text.lines();
        let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        assert!(text.ends_with("\n\n"));
        (name.to_owned(), serde_json::from_str(data).unwrap())
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_200 + 3661), "2026-12-01T01:01:01Z");
    }

    #[test]
    fn text_events_in_order() {
        let events = content_events(&Content::Text(vec!["Hel".into(), "lo".into()]));
        let names: Vec<String> = events.iter().map(|e| data_of(e).0).collect();
        assert_eq!(
            names,
            [
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(data_of(&events[2]).1["delta"]["text"], "lo");
        assert_eq!(data_of(&events[4]).1["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn tool_events_carry_the_input_as_json_delta() {
        let call = ToolCall::bash("ls");
        let events = content_events(&Content::Tools(vec![
            ("t1".into(), call.clone()),
            ("t2".into(), call),
        ]));
        assert_eq!(events.len(), 3 * 2 + 2);
        let (_, start) = data_of(&events[3]);
        assert_eq!(start["index"], 1);
        assert_eq!(start["content_block"]["id"], "t2");
        let (_, delta) = data_of(&events[1]);
        let input: Value =
            serde_json::from_str(delta["delta"]["partial_json"].as_str().unwrap()).unwrap();
        assert_eq!(input["command"], "ls");
        assert_eq!(data_of(&events[6]).1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn message_and_errors() {
        let m = message("msg_1", "opus", &Content::text("Hi"), 10);
        assert_eq!(m["content"][0]["text"], "Hi");
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(m["usage"]["input_tokens"], 10);
        assert_eq!(error_body(529)["error"]["type"], "overloaded_error");
        assert_eq!(error_body(401)["error"]["type"], "authentication_error");
        assert_eq!(error_type(500), "api_error");
        let (name, start) = data_of(&message_start("msg_1", "opus", 3));
        assert_eq!(name, "message_start");
        assert_eq!(start["message"]["usage"]["input_tokens"], 3);
    }
}
