//! A complete OpenAI chat completion replayed as the chunk stream that would have carried it.
//!
//! Some OpenAI-compatible servers ignore `stream: true` and answer one JSON completion. Rather
//! than failing the request (or, worse, streaming an empty answer), the proxy turns that
//! completion into the SSE chunks a streaming server sends — role, reasoning, text, each tool
//! call whole, the finish reason, usage, `[DONE]` — and feeds them to the same stream
//! translator or tap as a real stream, so both client protocols get a proper stream.

use serde_json::{Map, Value, json};

use super::TranslateError;

/// The SSE bytes (`data: {chunk}\n\n` … `data: [DONE]\n\n`) equivalent to the completion `body`.
///
/// Errors are [`TranslateError::InvalidUpstream`]: `body` is not JSON, or no completion (no
/// `choices` array).
pub fn completion_as_sse(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let completion: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream("body", format!("not JSON: {e}")))?;
    let Some(choices) = completion.get("choices").and_then(Value::as_array) else {
        return Err(TranslateError::upstream(
            "choices",
            "the answer is no chat completion (no `choices` array)",
        ));
    };
    let mut base = Map::new();
    for field in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = completion.get(field) {
            base.insert(field.to_owned(), value.clone());
        }
    }
    base.insert("object".to_owned(), json!("chat.completion.chunk"));
    let mut out = Vec::with_capacity(body.len() + 512);
    let mut chunk = |choices: Value, usage: Option<&Value>| {
        let mut object = base.clone();
        object.insert("choices".to_owned(), choices);
        if let Some(usage) = usage {
            object.insert("usage".to_owned(), usage.clone());
        }
        out.extend_from_slice(b"data: ");
        // Serialising a `Value` cannot fail (its keys are strings).
        out.extend_from_slice(Value::Object(object).to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    };
    for (position, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(position));
        let delta =
            |delta: Value| json!([{ "index": index, "delta": delta, "finish_reason": null }]);
        let message = choice.get("message").cloned().unwrap_or(Value::Null);
        chunk(delta(json!({ "role": "assistant" })), None);
        for field in ["reasoning_content", "reasoning"] {
            if let Some(text) = non_empty_text(message.get(field)) {
                chunk(delta(json!({ field: text })), None);
            }
        }
        if let Some(text) = non_empty_text(message.get("content")) {
            chunk(delta(json!({ "content": text })), None);
        }
        let calls = message.get("tool_calls").and_then(Value::as_array);
        for (i, call) in calls.into_iter().flatten().enumerate() {
            let mut call = call.as_object().cloned().unwrap_or_default();
            call.insert("index".to_owned(), json!(i));
            chunk(delta(json!({ "tool_calls": [call] })), None);
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        chunk(
            json!([{ "index": index, "delta": {}, "finish_reason": finish }]),
            None,
        );
    }
    if let Some(usage) = completion.get("usage").filter(|u| u.is_object()) {
        chunk(json!([]), Some(usage));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Ok(out)
}

fn non_empty_text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::SseDecoder;

    fn events(sse: &[u8]) -> Vec<Value> {
        let mut decoder = SseDecoder::new();
        decoder.push(sse);
        decoder.finish();
        std::iter::from_fn(|| decoder.next_event())
            .filter(|e| e.data != "[DONE]")
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn text_tool_calls_finish_and_usage_become_chunks() {
        let completion = json!({
            "id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
                "reasoning_content": "hmm",
                "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        });
        let sse = completion_as_sse(completion.to_string().as_bytes()).unwrap();
        assert!(sse.ends_with(b"data: [DONE]\n\n"));
        let chunks = events(&sse);
        let deltas: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta"))
            .collect();
        assert_eq!(deltas[0], &json!({"role": "assistant"}));
        assert_eq!(deltas[1], &json!({"reasoning_content": "hmm"}));
        assert_eq!(deltas[2], &json!({"content": "hi"}));
        assert_eq!(
            deltas[3].pointer("/tool_calls/0/function/arguments"),
            Some(&json!("{\"a\":1}"))
        );
        assert_eq!(deltas[3].pointer("/tool_calls/0/index"), Some(&json!(0)));
        assert_eq!(
            chunks[4].pointer("/choices/0/finish_reason"),
            Some(&json!("tool_calls"))
        );
        assert_eq!(chunks[5]["choices"], json!([]));
        assert_eq!(chunks[5]["usage"]["total_tokens"], json!(5));
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert!(chunks.iter().all(|c| c["model"] == "m" && c["id"] == "c1"));
    }

    #[test]
    fn anything_but_a_completion_is_refused() {
        for body in [&b"<html>busy</html>"[..], b"{\"error\":\"x\"}", b"[]", b""] {
            assert!(completion_as_sse(body).is_err(), "{body:?}");
        }
    }
}
