//! What the server answers: a [`Script`] of per-request [`Turn`]s, predicate [`Rule`]s and a
//! fallback. Plain data (serde), so the binary can load the same scripts from JSON files.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::request::MessagesRequest;

/// One tool call the model makes (`tool_use` block). The CLI runs it in its working
/// directory and sends the result in its next request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool: `Bash`, `Edit`, `Write`, `Read`...
    pub name: String,
    /// The tool's input, e.g. `{"command": "ls"}` for `Bash`.
    pub input: serde_json::Value,
}

impl ToolCall {
    /// A `Bash` call running `command`.
    pub fn bash(command: impl Into<String>) -> Self {
        Self {
            name: "Bash".into(),
            input: serde_json::json!({
                "command": command.into(),
                "description": "scripted model command",
            }),
        }
    }
}

/// How the server answers one `POST /v1/messages` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Turn {
    /// A final text answer (`stop_reason: end_turn`).
    Text(String),
    /// One or more tool calls (`stop_reason: tool_use`). When the CLI sends the results back,
    /// the server answers `then` (default: a sentence naming the calls).
    ToolUse {
        /// The calls, in order.
        calls: Vec<ToolCall>,
        /// The final text after the tool results came back.
        #[serde(default)]
        then: Option<String>,
    },
    /// An HTTP error: 401 (`authentication_error`), 429 (`rate_limit_error`, with
    /// `retry-after`), 529 (`overloaded_error`), 500 (`api_error`)...
    Error {
        /// The HTTP status.
        status: u16,
        /// The JSON body; default: an Anthropic error object matching the status.
        #[serde(default)]
        body: Option<serde_json::Value>,
        /// The `retry-after` header in seconds, if any.
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// A text answer streamed as `chunks`, with `delay` before each chunk.
    Slow {
        /// The text pieces.
        chunks: Vec<String>,
        /// The pause before each piece.
        #[serde(with = "millis", rename = "delay_ms")]
        delay: Duration,
    },
    /// A 429 as the API sends it when the account's usage limit is used up until a reset
    /// `reset_in_sec` seconds from the answer: a `rate_limit_error` body, `retry-after`, the
    /// standard `anthropic-ratelimit-{requests,tokens}-reset` (RFC 3339) and the subscription
    /// `anthropic-ratelimit-unified-*` headers (`status: rejected`, `reset` in Unix seconds,
    /// the `five_hour` claim) that Claude Code reads.
    UsageLimit {
        /// Seconds from the answer to the reset.
        reset_in_sec: u64,
    },
    /// Headers and `message_start`, then nothing: the connection stays open until the client
    /// goes away or the server shuts down.
    Stall,
    /// Acts on the plan like a real model: one `Bash` call that ticks the first open task and
    /// commits it (implementation prompt) or accepts the first implemented task (reviewer
    /// prompt), then the final sentence the loop expects.
    PlanAgent,
    /// Fixes a failing check: one `Bash` call that runs `script` in the worktree and commits
    /// the result without ticking anything, then "Fixed the failing check. N tasks remain."
    FixVerification {
        /// The shell snippet that fixes the check, e.g. `touch fixed.txt`.
        script: String,
    },
}

impl Turn {
    /// A short name for logs and [`crate::RecordedRequest::answer`].
    pub fn describe(&self) -> String {
        match self {
            Self::Text(_) => "text".into(),
            Self::ToolUse { calls, .. } => format!(
                "tool_use({})",
                calls
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Self::Error { status, .. } => format!("error {status}"),
            Self::UsageLimit { reset_in_sec } => format!("usage_limit({reset_in_sec}s)"),
            Self::Slow { .. } => "slow".into(),
            Self::Stall => "stall".into(),
            Self::PlanAgent => "plan_agent".into(),
            Self::FixVerification { .. } => "fix_verification".into(),
        }
    }
}

/// Which requests a [`Rule`] applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// The n-th `/v1/messages` request the server received (1-based).
    RequestNumber(usize),
    /// The user's prompt contains this text (case-sensitive).
    PromptContains(String),
    /// Any user text of the request, including the files the CLI attached for `@path`
    /// references, contains this text. E.g. the runner notes' "verification failed".
    RequestContains(String),
    /// The engine's run-naming prompt (asks for a short label).
    Naming,
    /// The loop's reviewer prompt ("senior reviewer").
    Reviewer,
}

impl When {
    /// True when `req` (the `number`-th request) matches.
    pub fn matches(&self, number: usize, req: &MessagesRequest) -> bool {
        match self {
            Self::RequestNumber(n) => *n == number,
            Self::PromptContains(text) => req.prompt().contains(text.as_str()),
            Self::RequestContains(text) => req.user_texts().iter().any(|t| t.contains(text)),
            Self::Naming => req.is_naming(),
            Self::Reviewer => req.is_reviewer(),
        }
    }
}

/// A turn used for every request that matches `when`, at most `times` times (unset: always).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Which requests.
    pub when: When,
    /// The answer.
    pub turn: Turn,
    /// How often the rule may fire; `None` = without limit.
    #[serde(default)]
    pub times: Option<usize>,
}

/// What the server answers, request after request.
///
/// For each new request: a continuation of the server's own tool call comes first (a request
/// whose last message carries the `tool_result` of a call the server made is answered by the
/// turn that made it), then the first matching [`Rule`] with uses left, then the next queued
/// [`Turn`], then the fallback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Script {
    /// Predicate rules, checked in order before the queue.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Turns used one per request, in order.
    #[serde(default)]
    pub turns: VecDeque<Turn>,
    /// The answer once the queue is empty.
    #[serde(default = "default_fallback")]
    pub fallback: Turn,
}

fn default_fallback() -> Turn {
    Turn::PlanAgent
}

impl Default for Script {
    /// The rehearsal script: a fixed name for naming requests, then [`Turn::PlanAgent`] forever.
    fn default() -> Self {
        Self::plan_agent()
    }
}

impl Script {
    /// Naming requests get the label "scripted widget run"; everything else is
    /// [`Turn::PlanAgent`].
    pub fn plan_agent() -> Self {
        Self {
            rules: vec![Rule {
                when: When::Naming,
                turn: Turn::Text("scripted widget run".into()),
                times: None,
            }],
            turns: VecDeque::new(),
            fallback: Turn::PlanAgent,
        }
    }

    /// An empty queue answering `fallback` to everything.
    pub fn always(fallback: Turn) -> Self {
        Self {
            rules: Vec::new(),
            turns: VecDeque::new(),
            fallback,
        }
    }

    /// Appends `turn` to the queue.
    #[must_use]
    pub fn then(mut self, turn: Turn) -> Self {
        self.turns.push_back(turn);
        self
    }

    /// Adds a rule (checked after the existing ones).
    #[must_use]
    pub fn rule(mut self, when: When, turn: Turn, times: Option<usize>) -> Self {
        self.rules.push(Rule { when, turn, times });
        self
    }

    /// Replaces the fallback.
    #[must_use]
    pub fn fallback(mut self, turn: Turn) -> Self {
        self.fallback = turn;
        self
    }

    /// Parses a JSON script (see the crate README for the format).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Picks the turn for a new request (not a continuation) and uses it up.
    pub(crate) fn next_turn(&mut self, number: usize, req: &MessagesRequest) -> Turn {
        for rule in &mut self.rules {
            if rule.times == Some(0) || !rule.when.matches(number, req) {
                continue;
            }
            if let Some(n) = rule.times.as_mut() {
                *n -= 1;
            }
            return rule.turn.clone();
        }
        self.turns
            .pop_front()
            .unwrap_or_else(|| self.fallback.clone())
    }
}

/// `Duration` as whole milliseconds in JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(prompt: &str) -> MessagesRequest {
        MessagesRequest::new(json!({
            "model": "m",
            "stream": true,
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        }))
    }

    #[test]
    fn rules_then_queue_then_fallback() {
        let mut script = Script::always(Turn::Text("fallback".into()))
            .then(Turn::Stall)
            .then(Turn::Text("second".into()))
            .rule(When::Reviewer, Turn::Text("review".into()), Some(1))
            .rule(When::RequestNumber(4), Turn::Text("fourth".into()), None);
        let plain = req("do the task");
        let review = req("You are a senior reviewer in an automated coding loop.");
        assert_eq!(script.next_turn(1, &review), Turn::Text("review".into()));
        // The reviewer rule is used up; the queue answers.
        assert_eq!(script.next_turn(2, &review), Turn::Stall);
        assert_eq!(script.next_turn(3, &plain), Turn::Text("second".into()));
        assert_eq!(script.next_turn(4, &plain), Turn::Text("fourth".into()));
        assert_eq!(script.next_turn(5, &plain), Turn::Text("fallback".into()));
    }

    #[test]
    fn naming_rule_of_the_default_script() {
        let mut script = Script::default();
        let naming = req("Give a short, memorable label for a coding run that implements");
        assert_eq!(
            script.next_turn(1, &naming),
            Turn::Text("scripted widget run".into())
        );
        assert_eq!(
            script.next_turn(2, &req("@a @b\nimplement")),
            Turn::PlanAgent
        );
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let text = r#"{
            "rules": [{"when": {"request_contains": "verification failed"},
                       "turn": {"fix_verification": {"script": "touch fixed.txt"}}}],
            "turns": [{"error": {"status": 529}}, "stall",
                      {"slow": {"chunks": ["a", "b"], "delay_ms": 250}},
                      {"tool_use": {"calls": [{"name": "Bash", "input": {"command": "ls"}}]}}]
        }"#;
        let script = Script::from_json(text).unwrap();
        assert_eq!(script.fallback, Turn::PlanAgent);
        assert_eq!(script.rules[0].times, None);
        assert_eq!(
            script.turns[0],
            Turn::Error {
                status: 529,
                body: None,
                retry_after: None
            }
        );
        assert_eq!(script.turns[1], Turn::Stall);
        assert_eq!(
            script.turns[2],
            Turn::Slow {
                chunks: vec!["a".into(), "b".into()],
                delay: Duration::from_millis(250)
            }
        );
        let back = serde_json::to_string(&script).unwrap();
        assert_eq!(Script::from_json(&back).unwrap(), script);
        assert!(Script::from_json(r#"{"turns": ["dance"]}"#).is_err());
    }

    #[test]
    fn describe_names_the_turn() {
        assert_eq!(
            Turn::ToolUse {
                calls: vec![ToolCall::bash("ls"), ToolCall::bash("pwd")],
                then: None
            }
            .describe(),
            "tool_use(Bash,Bash)"
        );
        assert_eq!(
            Turn::Error {
                status: 401,
                body: None,
                retry_after: None
            }
            .describe(),
            "error 401"
        );
    }
}
