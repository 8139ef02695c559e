//! A read-only view of a Messages API request body: the user's prompt, the `@path`
//! references in it, and the tool results the CLI sends back.
//!
//! The Claude CLI does not send the prompt alone: it expands each `@path` reference into
//! extra user content (`<system-reminder>` blocks with the file's text), adds attribution
//! reminders, and puts the prompt itself into a later text block. So "the prompt" here is
//! every user text before the first assistant turn that is not a `<system-reminder>`.

use serde_json::Value;

const REMINDER: &str = "<system-reminder>";

/// One `tool_result` block of the request's last message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolResult {
    /// The `tool_use` id it answers.
    pub tool_use_id: String,
    /// The result's text (string content, or its text blocks joined by newlines).
    pub text: String,
    /// True when the tool failed (e.g. a non-zero exit of a `Bash` command).
    pub is_error: bool,
}

/// A parsed `POST /v1/messages` body.
#[derive(Clone, Debug, PartialEq)]
pub struct MessagesRequest {
    body: Value,
}

impl MessagesRequest {
    /// Wraps a request body.
    pub fn new(body: Value) -> Self {
        Self { body }
    }

    /// The raw body.
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// The `model` field (empty when missing).
    pub fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// True when the client asked for a streamed (SSE) answer.
    pub fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every text of every user message, in order, including the CLI's `<system-reminder>`
    /// blocks (which carry the files attached for `@path` references).
    pub fn user_texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| role(m) == "user")
            .flat_map(texts_of)
            .collect()
    }

    /// The user's prompt: the user texts before the first assistant message that are not
    /// `<system-reminder>` blocks, joined by newlines.
    pub fn prompt(&self) -> String {
        self.messages()
            .iter()
            .take_while(|m| role(m) != "assistant")
            .filter(|m| role(m) == "user")
            .flat_map(texts_of)
            .filter(|t| !t.trim_start().starts_with(REMINDER))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `@path` references of the prompt's first line that starts with `@`.
    pub fn at_paths(&self) -> Vec<String> {
        let prompt = self.prompt();
        let Some(line) = prompt.lines().find(|l| l.trim_start().starts_with('@')) else {
            return Vec::new();
        };
        line.split_whitespace()
            .filter_map(|w| w.strip_prefix('@'))
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The plan file: the `@` reference ending in `-plan.md`, else the first one (a spec
    /// without a plan file carries its own checklist).
    pub fn plan_path(&self) -> Option<String> {
        let paths = self.at_paths();
        paths
            .iter()
            .find(|p| p.ends_with("-plan.md"))
            .or_else(|| paths.first())
            .cloned()
    }

    /// True for the loop's reviewer prompt.
    pub fn is_reviewer(&self) -> bool {
        self.prompt().to_lowercase().contains("senior reviewer")
    }

    /// True for the engine's run-naming prompt, which asks for a short label and has no
    /// `@path` context line.
    pub fn is_naming(&self) -> bool {
        let prompt = self.prompt().to_lowercase();
        prompt.contains("label") && prompt.contains("short") && self.at_paths().is_empty()
    }

    /// The `tool_result` blocks of the last message, when it is a user message carrying them.
    pub fn tool_results(&self) -> Vec<ToolResult> {
        let Some(last) = self.messages().last().filter(|m| role(m) == "user") else {
            return Vec::new();
        };
        let Some(blocks) = last.get("content").and_then(Value::as_array) else {
            return Vec::new();
        };
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| ToolResult {
                tool_use_id: b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                text: b.get("content").map(content_text).unwrap_or_default(),
                is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            })
            .collect()
    }

    /// A rough input token count (4 bytes a token), for the `usage` of answers.
    pub fn estimated_input_tokens(&self) -> u64 {
        let bytes = self.body.to_string().len() as u64;
        bytes / 4 + 1
    }
}

fn role(message: &Value) -> &str {
    message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The texts of a message: its string content, or its `text` blocks.
fn texts_of(message: &Value) -> Vec<String> {
    match message.get("content") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A tool result's content as text: a string, or the `text` blocks joined by newlines.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape the Claude CLI 2.1.x sends for a prompt with `@` references: the attached
    /// files first, then reminders, then the prompt; a `system` message after them.
    fn cli_request() -> MessagesRequest {
        MessagesRequest::new(json!({
            "model": "claude-opus-5-5",
            "stream": true,
            "messages": [
                {"role": "user", "content": "<system-reminder>\nCalled the Read tool with the following input: {\"file_path\":\"/w/specs/widget.md\"}\n</system-reminder>"},
                {"role": "user", "content": [
                    {"type": "text", "text": "<system-reminder>\nResult of calling the Read tool:\n1\t# TOP PRIORITY: verification failed\n</system-reminder>\n"},
                    {"type": "text", "text": "<system-reminder>\nAttribution ...\n</system-reminder>\n"},
                    {"type": "text", "text": "@specs/widget.md @specs/planning/widget-plan.md @/logs/run-1/runner-notes.txt\n\nYou are one iteration of an automated coding loop."}
                ]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_sm_1", "name": "Bash", "input": {"command": "ls"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_sm_1", "content": "LOOP_MODEL pending=2", "is_error": false}]}
            ]
        }))
    }

    #[test]
    fn prompt_skips_reminders_and_later_turns() {
        let req = cli_request();
        assert_eq!(
            req.prompt(),
            "@specs/widget.md @specs/planning/widget-plan.md @/logs/run-1/runner-notes.txt\n\nYou are one iteration of an automated coding loop."
        );
        assert_eq!(req.model(), "claude-opus-5-5");
        assert!(req.stream());
        assert!(!req.is_reviewer());
        assert!(!req.is_naming());
    }

    #[test]
    fn at_paths_and_plan() {
        let req = cli_request();
        assert_eq!(
            req.at_paths(),
            [
                "specs/widget.md",
                "specs/planning/widget-plan.md",
                "/logs/run-1/runner-notes.txt"
            ]
        );
        assert_eq!(
            req.plan_path().as_deref(),
            Some("specs/planning/widget-plan.md")
        );
        let no_plan = MessagesRequest::new(json!({
            "messages": [{"role": "user", "content": "@specs/solo.md @notes.txt\ndo it"}]
        }));
        assert_eq!(no_plan.plan_path().as_deref(), Some("specs/solo.md"));
        let none = MessagesRequest::new(json!({"messages": []}));
        assert_eq!(none.plan_path(), None);
        assert_eq!(none.prompt(), "");
    }

    #[test]
    fn user_texts_include_attached_files() {
        let req = cli_request();
        assert!(
            req.user_texts()
                .iter()
                .any(|t| t.contains("TOP PRIORITY: verification failed"))
        );
    }

    #[test]
    fn tool_results_of_the_last_message() {
        let req = cli_request();
        assert_eq!(
            req.tool_results(),
            [ToolResult {
                tool_use_id: "toolu_sm_1".into(),
                text: "LOOP_MODEL pending=2".into(),
                is_error: false
            }]
        );
        let blocks = MessagesRequest::new(json!({"messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": true,
              "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
        ]}));
        let results = blocks.tool_results();
        assert_eq!(results[0].text, "a\nb");
        assert!(results[0].is_error);
        assert!(
            MessagesRequest::new(json!({"messages": [{"role": "user", "content": "hi"}]}))
                .tool_results()
                .is_empty()
        );
    }

    #[test]
    fn reviewer_and_naming_detection() {
        let review = MessagesRequest::new(json!({"messages": [{"role": "user", "content":
            "@specs/w.md @specs/planning/w-plan.md\n\nYou are a senior reviewer in an automated coding loop."}]}));
        assert!(review.is_reviewer());
        let naming = MessagesRequest::new(json!({"messages": [{"role": "user", "content":
            "Give a short, memorable label for a coding run that implements the specification below."}]}));
        assert!(naming.is_naming());
        assert!(!naming.is_reviewer());
    }
}
