//! The native Messages checks: is `POST /v1/messages` served, and does a forced tool call
//! survive a native stream as a `tool_use` block (what Claude Code depends on)?

use serde_json::{Value, json};
use shared::account::AccountKind;
use shared::profile::Profile;

use super::MAX_TOKENS;
use super::wire::{Probe, brief, not_served};
use crate::upstream::UpstreamError;

/// What the native checks found.
#[derive(Debug, Default)]
pub(super) struct Native {
    messages: Option<bool>,
    streamed_tool_calls: Option<bool>,
    notes: Vec<String>,
}

impl Native {
    /// Writes the findings into `profile`.
    pub(super) fn apply(self, profile: &mut Profile) {
        profile.native_messages = self.messages;
        profile.native_streamed_tool_calls = self.streamed_tool_calls;
        profile.notes.extend(self.notes);
    }
}

/// The tool the tool checks force.
pub(super) const TOOL_NAME: &str = "get_weather";

fn tool_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "city": { "type": "string" } },
        "required": ["city"]
    })
}

/// The Anthropic form of the tool.
fn anthropic_tool() -> Value {
    json!({ "name": TOOL_NAME, "description": "The weather in a city.", "input_schema": tool_schema() })
}

/// The OpenAI form of the tool.
pub(super) fn openai_tool() -> Value {
    json!({
        "type": "function",
        "function": { "name": TOOL_NAME, "description": "The weather in a city.", "parameters": tool_schema() }
    })
}

/// Runs the native checks, in sequence.
pub(super) async fn check(probe: &Probe<'_>) -> Native {
    let mut found = Native::default();
    if probe.account.settings.kind == AccountKind::Azure {
        found
            .notes
            .push("native Messages not asked: Azure OpenAI does not serve it".to_owned());
        return found;
    }
    let plain = json!({
        "model": probe.deployment(), "max_tokens": MAX_TOKENS,
        "messages": [{ "role": "user", "content": "Say OK." }],
    });
    found.messages = match probe.post("/v1/messages", &plain, probe.generation()).await {
        Ok(answer) if is_message(&answer) => Some(true),
        Ok(_) => {
            found
                .notes
                .push("/v1/messages answered something that is no message".to_owned());
            Some(false)
        }
        Err(e) if not_served(&e) => Some(false),
        Err(e) => {
            found
                .notes
                .push(format!("native Messages unknown: {}", brief(&e)));
            None
        }
    };
    if found.messages != Some(true) {
        return found;
    }
    let tool = json!({
        "model": probe.deployment(), "max_tokens": MAX_TOKENS, "stream": true,
        "messages": [{ "role": "user", "content": "What is the weather in Paris?" }],
        "tools": [anthropic_tool()],
        "tool_choice": { "type": "tool", "name": TOOL_NAME },
    });
    found.streamed_tool_calls = match probe.post_stream("/v1/messages", &tool).await {
        Ok(events) => Some(events.iter().any(is_tool_use_start)),
        Err(e @ UpstreamError::Status { .. }) => {
            found.notes.push(format!(
                "a native streamed tool call was refused: {}",
                brief(&e)
            ));
            Some(false)
        }
        Err(e) => {
            found
                .notes
                .push(format!("native streamed tool calls unknown: {}", brief(&e)));
            None
        }
    };
    found
}

fn is_message(answer: &Value) -> bool {
    answer.get("type").and_then(Value::as_str) == Some("message")
        || answer.get("content").is_some_and(Value::is_array)
}

fn is_tool_use_start(event: &Value) -> bool {
    event.get("type").and_then(Value::as_str) == Some("content_block_start")
        && event.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use")
}
