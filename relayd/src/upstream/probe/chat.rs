//! The chat-completions checks: a forced tool call whole and streamed (the stream also asking
//! for usage), `max_completion_tokens`, and the field reasoning text arrives in.

use serde_json::{Value, json};
use shared::profile::{Profile, ReasoningField};

use super::MAX_TOKENS;
use super::native::{TOOL_NAME, openai_tool};
use super::wire::{Probe, brief};
use crate::upstream::UpstreamError;

/// What the chat checks found.
#[derive(Debug, Default)]
pub(super) struct Chat {
    tool_calls: Option<bool>,
    streamed_tool_calls: Option<bool>,
    stream_usage: Option<bool>,
    max_completion_tokens: Option<bool>,
    reasoning: Option<ReasoningField>,
    notes: Vec<String>,
}

impl Chat {
    /// Writes the findings into `profile`.
    pub(super) fn apply(self, profile: &mut Profile) {
        profile.tool_calls = self.tool_calls;
        profile.streamed_tool_calls = self.streamed_tool_calls;
        profile.stream_usage = self.stream_usage;
        profile.max_completion_tokens = self.max_completion_tokens;
        profile.reasoning_field = self.reasoning;
        profile.notes.extend(self.notes);
        if profile.reasoning_field.is_none() {
            profile
                .notes
                .push("reasoning field unknown: no reasoning text in the answers".to_owned());
        }
    }

    fn saw_reasoning(&mut self, message: Option<&Value>) {
        if self.reasoning.is_none() {
            self.reasoning = message.and_then(reasoning_field);
        }
    }
}

/// Runs the chat checks, in sequence.
pub(super) async fn check(probe: &Probe<'_>) -> Chat {
    let mut found = Chat::default();
    let forced = |stream: bool| {
        let mut body = json!({
            "model": probe.deployment(), "max_tokens": MAX_TOKENS,
            "messages": [{ "role": "user", "content": "What is the weather in Paris?" }],
            "tools": [openai_tool()],
            "tool_choice": { "type": "function", "function": { "name": TOOL_NAME } },
        });
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    };
    match probe.chat(&forced(false)).await {
        Ok(answer) => {
            let message = answer.pointer("/choices/0/message");
            found.tool_calls = Some(has_tool_calls(message));
            found.saw_reasoning(message);
        }
        Err(e) => found.tool_calls = refused(&mut found.notes, "a forced tool call", &e),
    }
    match probe.chat_stream(&forced(true)).await {
        Ok(events) => {
            let deltas = events.iter().filter_map(|e| e.pointer("/choices/0/delta"));
            found.streamed_tool_calls = Some(deltas.clone().any(|d| has_tool_calls(Some(d))));
            for delta in deltas {
                found.saw_reasoning(Some(delta));
            }
            found.stream_usage = Some(
                events
                    .iter()
                    .any(|e| e.get("usage").is_some_and(Value::is_object)),
            );
        }
        Err(e) => {
            found.streamed_tool_calls =
                refused(&mut found.notes, "a streamed forced tool call", &e);
            found
                .notes
                .push("usage in streams unknown: the stream check failed".to_owned());
        }
    }
    let limited = json!({
        "model": probe.deployment(), "max_completion_tokens": 1,
        "messages": [{ "role": "user", "content": "Say OK." }],
    });
    match probe.chat(&limited).await {
        Ok(answer) => {
            found.max_completion_tokens = Some(true);
            found.saw_reasoning(answer.pointer("/choices/0/message"));
        }
        Err(e) => {
            found.max_completion_tokens = refused(&mut found.notes, "max_completion_tokens", &e);
        }
    }
    found
}

/// A check's failure: a refusal (the server answered with an error status) is a `false`, and
/// anything else leaves it unknown. Either way the note says what happened.
fn refused(notes: &mut Vec<String>, what: &str, e: &UpstreamError) -> Option<bool> {
    match e {
        UpstreamError::Status { status, .. } if *status < 500 => {
            notes.push(format!("{what} was refused: {}", brief(e)));
            Some(false)
        }
        _ => {
            notes.push(format!("{what} unknown: {}", brief(e)));
            None
        }
    }
}

fn has_tool_calls(message: Option<&Value>) -> bool {
    message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty())
}

/// The reasoning field of a message or delta that carries reasoning text.
fn reasoning_field(message: &Value) -> Option<ReasoningField> {
    let said = |key: &str| {
        message
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    };
    if said("reasoning_content") {
        Some(ReasoningField::ReasoningContent)
    } else if said("reasoning") {
        Some(ReasoningField::Reasoning)
    } else {
        None
    }
}
