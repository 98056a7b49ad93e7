//! The Anthropic-native surface of the mock upstream ([`crate::mock_upstream::MockUpstream`]
//! answers whatever it is told on any path, `/v1/messages` included): Messages API answers,
//! event streams and error bodies in Anthropic's shapes, and the request a native upstream
//! should receive.

use std::time::Duration;

use serde_json::{Value, json};

use crate::mock_upstream::MockReply;

/// A Messages API answer with `text`, as a server names its model `model`, with full usage.
pub fn message(model: &str, text: &str) -> Value {
    json!({
        "id": "msg_native_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 5,
            "cache_read_input_tokens": 8, "cache_creation_input_tokens": 3}
    })
}

/// A 200 Messages answer (see [`message`]).
pub fn message_reply(model: &str, text: &str) -> MockReply {
    MockReply::Json {
        status: 200,
        body: message(model, text),
        headers: Vec::new(),
    }
}

/// An error status with Anthropic's error body.
pub fn error_reply(status: u16, kind: &str, text: &str) -> MockReply {
    MockReply::Json {
        status,
        body: json!({"type": "error", "error": {"type": kind, "message": text}}),
        headers: Vec::new(),
    }
}

/// The events of a streamed answer with `texts` as text deltas, exactly as written to the wire
/// (one string per event), usage in `message_start` and `message_delta`.
pub fn stream_events(model: &str, texts: &[&str]) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_native_mock", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 40, "output_tokens": 1,
                "cache_read_input_tokens": 12, "cache_creation_input_tokens": 0}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for text in texts {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 9}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

/// A streamed reply of `events`, each its own network write, `gap` apart.
pub fn stream_reply(events: Vec<String>, gap: Duration) -> MockReply {
    MockReply::Stream {
        pieces: events,
        gap,
        abort: false,
    }
}
