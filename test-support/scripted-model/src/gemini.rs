//! The Gemini API dialect (`POST /v1beta/models/<model>:streamGenerateContent?alt=sse`,
//! `:generateContent`, `:countTokens`), as the Gemini CLI speaks it: `contents` are read as a
//! Messages request (so the same [`Script`](crate::Script) answers), and the answer is sent as
//! `GenerateContentResponse` chunks (SSE `data:` lines when streamed).
//!
//! A `Bash` tool call of the script becomes a `functionCall` of the CLI's shell tool
//! `run_shell_command`; its `functionResponse` comes back as the tool result. The CLI's
//! helper calls that ask for JSON (`responseJsonSchema`, e.g. its next-speaker check) get a
//! JSON object matching the schema and do not use up a scripted turn.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Channel};
use hyper::Response;
use serde_json::{Map, Value, json};

use crate::reply::Content;
use crate::request::MessagesRequest;
use crate::server::{
    Answer, Body, RecordedRequest, Shared, decide, json_response, sse_response, stall,
};

/// The Gemini CLI's shell tool.
pub const SHELL_TOOL: &str = "run_shell_command";

/// Reads a `generateContent` body as a Messages API body: `user` text parts become user text,
/// `model` parts assistant text or `tool_use` blocks (`functionCall`), `functionResponse`
/// parts user `tool_result` blocks (matched by the call's `id`, else its name). Thoughts are
/// left out.
pub fn to_messages(model: &str, stream: bool, body: &Value) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    for content in body
        .get("contents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let role = match content.get("role").and_then(Value::as_str) {
            Some("model") => "assistant",
            _ => "user",
        };
        let mut blocks = Vec::new();
        for part in content
            .get("parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                blocks.push(json!({"type": "text", "text": text}));
            } else if let Some(call) = part.get("functionCall") {
                blocks.push(json!({"type": "tool_use", "id": call_key(call),
                    "name": call.get("name").cloned().unwrap_or(Value::Null),
                    "input": call.get("args").cloned().unwrap_or(Value::Null)}));
            } else if let Some(resp) = part.get("functionResponse") {
                let response = resp.get("response").unwrap_or(&Value::Null);
                let text = ["output", "error", "llmContent"]
                    .iter()
                    .find_map(|k| response.get(*k).and_then(Value::as_str))
                    .map_or_else(|| response.to_string(), str::to_owned);
                let failed = response.get("error").is_some();
                blocks.push(json!({"type": "tool_result", "tool_use_id": call_key(resp),
                    "content": text, "is_error": failed}));
            }
        }
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["content"].as_array_mut() {
                    existing.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    json!({"model": model, "stream": stream, "messages": messages})
}

/// The key a call and its response share: the call's `id`, else its name.
fn call_key(v: &Value) -> Value {
    v.get("id")
        .filter(|id| id.as_str().is_some_and(|s| !s.is_empty()))
        .or_else(|| v.get("name"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Answers one `POST /v1beta/models/<model>:<method>`.
pub(crate) fn generate(
    shared: &Arc<Shared>,
    route: &str,
    body: &[u8],
    record: &mut RecordedRequest,
) -> (Response<Body>, String) {
    let tail = route.rsplit('/').next().unwrap_or_default();
    let (model, method) = tail.split_once(':').unwrap_or((tail, ""));
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (json_response(400, &error_body(400)), "400".to_owned());
    };
    match method {
        "countTokens" => {
            let tokens = value.to_string().len() / 4 + 1;
            return (
                json_response(200, &json!({"totalTokens": tokens})),
                "count_tokens".to_owned(),
            );
        }
        "streamGenerateContent" | "generateContent" => {}
        _ => return (json_response(404, &error_body(404)), "404".to_owned()),
    }
    let stream = method == "streamGenerateContent";
    if let Some(schema) = json_schema(&value) {
        // A helper call of the CLI (next speaker, routing...): not a scripted turn.
        let text = fill(schema).to_string();
        let chunk = chunk(&[json!({"text": text})], Some("STOP"), Some((1, 1)));
        return if stream {
            (
                sse(vec![(false, data(&chunk))], Duration::ZERO),
                "json helper".to_owned(),
            )
        } else {
            (json_response(200, &chunk), "json helper".to_owned())
        };
    }
    let req = MessagesRequest::new(to_messages(model, stream, &value));
    let (number, answer, label) = decide(shared, &req);
    record.number = Some(number);
    (respond(shared, &req, number, stream, answer), label)
}

/// The JSON schema a request asks its answer to follow, if any.
fn json_schema(body: &Value) -> Option<&Value> {
    let config = body.get("generationConfig")?;
    config
        .get("responseJsonSchema")
        .or_else(|| config.get("responseSchema"))
        .or_else(|| {
            (config.get("responseMimeType").and_then(Value::as_str) == Some("application/json"))
                .then_some(&Value::Null)
        })
}

/// A value matching `schema`: for `next_speaker` the user, else the first enum value, empty
/// strings, zeros, `false`, and objects with every property.
fn fill(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_lowercase();
    match kind.as_str() {
        "string" => json!("scripted"),
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        "array" => json!([]),
        _ => {
            let mut out = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    let value = if k == "next_speaker" {
                        json!("user")
                    } else {
                        fill(v)
                    };
                    out.insert(k.clone(), value);
                }
            }
            Value::Object(out)
        }
    }
}

/// The Google API error object for `status`.
pub fn error_body(status: u16) -> Value {
    let (kind, message) = match status {
        400 => ("INVALID_ARGUMENT", "The request is not valid (scripted)."),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials (scripted).",
        ),
        403 => ("PERMISSION_DENIED", "Permission denied (scripted)."),
        404 => ("NOT_FOUND", "Not found (scripted)."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (scripted).",
        ),
        _ => ("UNAVAILABLE", "The model is overloaded (scripted)."),
    };
    json!({"error": {"code": status, "message": message, "status": kind}})
}

fn chunk(parts: &[Value], finish: Option<&str>, usage: Option<(u64, u64)>) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(reason) = finish {
        candidate["finishReason"] = json!(reason);
    }
    let mut out = json!({"candidates": [candidate], "modelVersion": "scripted"});
    if let Some((input, output)) = usage {
        out["usageMetadata"] = json!({"promptTokenCount": input, "candidatesTokenCount": output,
            "totalTokenCount": input + output});
    }
    out
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

fn sse(events: Vec<(bool, Bytes)>, delay: Duration) -> Response<Body> {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(events.len() + 1);
    tokio::spawn(async move {
        for (paced, ev) in events {
            if paced && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send_data(ev).await.is_err() {
                return;
            }
        }
    });
    sse_response(body.boxed())
}

fn respond(
    shared: &Arc<Shared>,
    req: &MessagesRequest,
    number: usize,
    stream: bool,
    answer: Answer,
) -> Response<Body> {
    let (content, delay) = match answer {
        Answer::Error {
            status,
            body: _,
            retry_after,
        } => {
            let mut res = json_response(status, &error_body(status));
            if let Some(secs) = retry_after {
                res.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from(secs));
            }
            return res;
        }
        // This dialect's usage limit: a 429 whose `retry-after` says when it resets.
        Answer::UsageLimit { reset_in_sec } => {
            let mut res = json_response(429, &error_body(429));
            res.headers_mut().insert(
                "retry-after",
                hyper::header::HeaderValue::from(reset_in_sec),
            );
            return res;
        }
        Answer::Stall => {
            let first = chunk(&[json!({"text": "Working"})], None, None);
            return stall(shared, stream.then(|| data(&first)));
        }
        Answer::Content(c) => (c, Duration::ZERO),
        Answer::Slow(c, d) => (c, d),
    };
    let usage = Some((req.estimated_input_tokens(), content.output_tokens()));
    let chunks: Vec<(bool, Value)> = match &content {
        Content::Text(pieces) => {
            let last = pieces.len().saturating_sub(1);
            pieces
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let end = i == last;
                    (
                        true,
                        chunk(
                            &[json!({"text": p})],
                            end.then_some("STOP"),
                            if end { usage } else { None },
                        ),
                    )
                })
                .collect()
        }
        Content::Tools(calls) => {
            let parts: Vec<Value> = calls
                .iter()
                .map(|(id, call)| {
                    let (name, args) = shell_call(&call.name, &call.input);
                    json!({"functionCall": {"id": id, "name": name, "args": args}})
                })
                .collect();
            vec![(false, chunk(&parts, Some("STOP"), usage))]
        }
    };
    if !stream {
        // One response holding every part.
        let parts: Vec<Value> = chunks
            .iter()
            .flat_map(|(_, c)| {
                c["candidates"][0]["content"]["parts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let _ = number;
        return json_response(200, &chunk(&parts, Some("STOP"), usage));
    }
    sse(
        chunks.into_iter().map(|(p, c)| (p, data(&c))).collect(),
        delay,
    )
}

/// The Gemini tool call for a script's call: `Bash` becomes `run_shell_command`, anything
/// else is sent as it is.
///
/// The Gemini CLI refuses shell commands with command substitution (`$(...)`, backticks),
/// even in YOLO mode ("Blocked: command substitution detected"), and the plan agent's commands
/// use it; so the command travels base64-encoded and is decoded into `bash`.
fn shell_call(name: &str, input: &Value) -> (String, Value) {
    if name == "Bash"
        && let Some(command) = input.get("command").and_then(Value::as_str)
    {
        let command = if command.contains("$(") || command.contains('`') {
            format!(
                "printf %s {} | base64 -d | bash",
                base64(command.as_bytes())
            )
        } else {
            command.to_owned()
        };
        return (
            SHELL_TOOL.to_owned(),
            json!({"command": command, "description": "scripted model command"}),
        );
    }
    (name.to_owned(), input.clone())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_read_as_messages() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "<session_context>x</session_context>"}]},
            {"role": "user", "parts": [{"text": "@specs/w.md @specs/planning/w-plan.md\nWork"}]},
            {"role": "model", "parts": [{"text": "hm", "thought": true}, {"functionCall": {"id": "c1", "name": "run_shell_command", "args": {"command": "ls"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "run_shell_command", "response": {"output": "LOOP_MODEL pending=1"}}}]}
        ]});
        let req = MessagesRequest::new(to_messages("gemini-2.5-pro", true, &body));
        assert_eq!(req.model(), "gemini-2.5-pro");
        assert_eq!(req.plan_path().as_deref(), Some("specs/planning/w-plan.md"));
        let results = req.tool_results();
        assert_eq!(results[0].tool_use_id, "c1");
        assert_eq!(results[0].text, "LOOP_MODEL pending=1");
    }

    #[test]
    fn schemas_are_filled() {
        let schema = json!({"type": "object", "properties": {
            "reasoning": {"type": "string"}, "next_speaker": {"type": "string", "enum": ["user", "model"]},
            "n": {"type": "integer"}}});
        assert_eq!(
            fill(&schema),
            json!({"reasoning": "scripted", "next_speaker": "user", "n": 0})
        );
    }

    #[test]
    fn bash_becomes_run_shell_command() {
        let (name, args) = shell_call("Bash", &json!({"command": "ls"}));
        assert_eq!(name, "run_shell_command");
        assert_eq!(args["command"], "ls");
        let (_, args) = shell_call("Bash", &json!({"command": "echo $(date)"}));
        assert_eq!(
            args["command"],
            "printf %s ZWNobyAkKGRhdGUp | base64 -d | bash"
        );
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
