//! The OpenAI Responses API dialect (`POST /v1/responses`), as the Codex CLI speaks it: the
//! request's `input` items are read as a Messages request (so the same [`Script`](crate::Script)
//! answers), and the answer is streamed as Responses SSE events (`response.created`,
//! `response.output_text.delta`, `response.output_item.done`, `response.completed`).
//!
//! A `Bash` tool call of the script becomes a call of Codex's shell tool `exec_command`
//! (`{"cmd": ...}`); its `function_call_output` comes back as the tool result.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Channel};
use hyper::Response;
use serde_json::{Value, json};

use crate::reply::Content;
use crate::request::MessagesRequest;
use crate::server::{
    Answer, Body, RecordedRequest, Shared, decide, json_response, sse_response, stall,
};

/// The Codex CLI's shell tool.
pub const SHELL_TOOL: &str = "exec_command";

/// Reads a Responses API body as a Messages API body: `message` items become user (or
/// assistant) text, `function_call` items assistant `tool_use` blocks, `function_call_output`
/// items user `tool_result` blocks. `developer`/`system` messages are left out.
pub fn to_messages(body: &Value) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, block: Value| {
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(blocks) = last["content"].as_array_mut()
        {
            blocks.push(block);
            return;
        }
        messages.push(json!({"role": role, "content": [block]}));
    };
    let items: Vec<Value> = match body.get("input") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
        _ => Vec::new(),
    };
    for item in &items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                if role != "user" && role != "assistant" {
                    continue;
                }
                for text in texts(item.get("content").unwrap_or(&Value::Null)) {
                    push(role, json!({"type": "text", "text": text}));
                }
            }
            "function_call" => {
                let input = item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                    .unwrap_or(Value::Null);
                push(
                    "assistant",
                    json!({"type": "tool_use", "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                           "name": item.get("name").cloned().unwrap_or(Value::Null), "input": input}),
                );
            }
            "function_call_output" => {
                let output = item.get("output").unwrap_or(&Value::Null);
                let text = match output {
                    Value::String(s) => s.clone(),
                    other => texts(other).join("\n"),
                };
                push(
                    "user",
                    json!({"type": "tool_result", "tool_use_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                           "content": text}),
                );
            }
            _ => {}
        }
    }
    json!({
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "stream": body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        "messages": messages,
    })
}

/// The texts of a content value: a string, or `input_text`/`output_text`/`text` parts.
fn texts(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => vec![s.clone()],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Answers one `POST /v1/responses`.
pub(crate) fn responses(
    shared: &Arc<Shared>,
    body: &[u8],
    record: &mut RecordedRequest,
) -> (Response<Body>, String) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (json_response(400, &error_body(400)), "400".to_owned());
    };
    let req = MessagesRequest::new(to_messages(&value));
    let (number, answer, label) = decide(shared, &req);
    record.number = Some(number);
    (respond(shared, &req, number, answer), label)
}

/// The OpenAI error object for `status`.
pub fn error_body(status: u16) -> Value {
    let (kind, message) = match status {
        401 => (
            "invalid_request_error",
            "Incorrect API key provided (scripted).",
        ),
        429 => ("rate_limit_exceeded", "Rate limit reached (scripted)."),
        400 => ("invalid_request_error", "The body is not JSON."),
        _ => ("server_error", "The server had an error (scripted)."),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
}

fn event(data: &Value) -> Bytes {
    let name = data["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn respond(
    shared: &Arc<Shared>,
    req: &MessagesRequest,
    number: usize,
    answer: Answer,
) -> Response<Body> {
    let id = format!("resp_sm_{number}");
    let created = event(&json!({"type": "response.created", "sequence_number": 0,
        "response": {"id": id, "object": "response", "status": "in_progress", "model": req.model(), "output": []}}));
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
        Answer::Stall => return stall(shared, Some(created)),
        Answer::Content(c) => (c, Duration::ZERO),
        Answer::Slow(c, d) => (c, d),
    };
    let input_tokens = req.estimated_input_tokens();
    let output_tokens = content.output_tokens();
    let mut events: Vec<(bool, Bytes)> = vec![(false, created)];
    match &content {
        Content::Text(pieces) => {
            let item_id = format!("msg_sm_{number}");
            events.push((
                false,
                event(&json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}})),
            ));
            for piece in pieces {
                events.push((
                    true,
                    event(
                        &json!({"type": "response.output_text.delta", "item_id": item_id,
                        "output_index": 0, "content_index": 0, "delta": piece}),
                    ),
                ));
            }
            events.push((
                false,
                event(&json!({"type": "response.output_item.done", "output_index": 0,
                    "item": {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                             "content": [{"type": "output_text", "text": pieces.concat(), "annotations": []}]}})),
            ));
        }
        Content::Tools(calls) => {
            for (index, (call_id, call)) in calls.iter().enumerate() {
                let (name, arguments) = shell_call(&call.name, &call.input);
                events.push((
                    false,
                    event(&json!({"type": "response.output_item.done", "output_index": index,
                        "item": {"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
                                 "name": name, "arguments": arguments.to_string(), "status": "completed"}})),
                ));
            }
        }
    }
    events.push((
        false,
        event(&json!({"type": "response.completed",
            "response": {"id": id, "object": "response", "status": "completed", "model": req.model(),
                "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": input_tokens + output_tokens}}})),
    ));
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(events.len() + 1);
    tokio::spawn(async move {
        for (is_delta, ev) in events {
            if is_delta && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send_data(ev).await.is_err() {
                return;
            }
        }
    });
    sse_response(body.boxed())
}

/// The Codex tool call for a script's call: `Bash` becomes `exec_command`, anything else is
/// sent as it is (its input as the arguments).
fn shell_call(name: &str, input: &Value) -> (String, Value) {
    if name == "Bash"
        && let Some(command) = input.get("command").and_then(Value::as_str)
    {
        return (
            SHELL_TOOL.to_owned(),
            json!({"cmd": command, "yield_time_ms": 30000}),
        );
    }
    (name.to_owned(), input.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_read_as_messages() {
        let body = json!({"model": "gpt-5", "stream": true, "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>x</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "@specs/w.md @specs/planning/w-plan.md\nWork"}]},
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "LOOP_MODEL pending=0"}
        ]});
        let req = MessagesRequest::new(to_messages(&body));
        assert_eq!(req.model(), "gpt-5");
        assert!(req.stream());
        assert_eq!(req.plan_path().as_deref(), Some("specs/planning/w-plan.md"));
        assert!(!req.prompt().contains("You are Codex"));
        let results = req.tool_results();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].tool_use_id, "c1");
        assert_eq!(results[0].text, "LOOP_MODEL pending=0");
    }

    #[test]
    fn bash_becomes_exec_command() {
        let (name, args) = shell_call("Bash", &json!({"command": "ls", "description": "d"}));
        assert_eq!(name, "exec_command");
        assert_eq!(args["cmd"], "ls");
        let (name, args) = shell_call("view_image", &json!({"path": "a.png"}));
        assert_eq!(name, "view_image");
        assert_eq!(args["path"], "a.png");
    }
}
