//! Tests of the native passthrough: byte fidelity except the rewritten values.

use super::*;

fn prepare(body: &str, cap: Option<u32>) -> (String, NativeRequestInfo) {
    let (out, info) = prepare_native_request(body.as_bytes(), "dep", cap).unwrap();
    (String::from_utf8(out).unwrap(), info)
}

#[test]
fn only_model_and_max_tokens_change() {
    let body = r#"{"model":"claude-x","max_tokens":64000,"stream":true,"metadata":{"user_id":"u"},"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"tools":[{"name":"t","input_schema":{"type":"object"}}]}"#;
    let (out, info) = prepare(body, Some(1000));
    assert_eq!(
        out,
        body.replace("\"claude-x\"", "\"dep\"")
            .replace("64000", "1000")
    );
    assert_eq!(info.requested_model, "claude-x");
    assert!(info.stream);
    let (out, _) = prepare(body, None);
    assert_eq!(out, body.replace("\"claude-x\"", "\"dep\""));
}

#[test]
fn billing_line_leaves_system() {
    let (out, _) = prepare(
        r#"{"model":"m","system":"x-anthropic-billing-header: cc_version=1;\nYou help.","max_tokens":5}"#,
        None,
    );
    assert_eq!(
        out,
        r#"{"model":"dep","system":"You help.","max_tokens":5}"#
    );
    let (out, _) = prepare(
        r#"{"model":"m","system":"x-anthropic-billing-header: cc_version=1;","max_tokens":5}"#,
        None,
    );
    assert_eq!(out, r#"{"model":"dep","max_tokens":5}"#);
    let (out, _) = prepare(
        r#"{"model":"m","system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2;"},{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"max_tokens":5}"#,
        None,
    );
    assert_eq!(
        out,
        r#"{"model":"dep","system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"max_tokens":5}"#
    );
    let body = r#"{"model":"m", "system": [ {"type":"text","text":"plain"} ],"max_tokens":5}"#;
    let (out, _) = prepare(body, None);
    assert_eq!(
        out,
        r#"{"model":"dep","system":[ {"type":"text","text":"plain"} ],"max_tokens":5}"#
    );
}

#[test]
fn missing_model_is_the_clients_mistake() {
    let err = prepare_native_request(br#"{"max_tokens":5}"#, "dep", None).unwrap_err();
    assert_eq!(err.status_code(), 400);
}

#[test]
fn answer_model_is_rewritten_and_usage_read() {
    let body = r#"{"id":"msg_1","type":"message","model":"dep","content":[],"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":7,"cache_creation_input_tokens":2}}"#;
    let (out, usage) = rewrite_native_response(body.as_bytes(), "claude-x").unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        body.replace("\"dep\"", "\"claude-x\"")
    );
    let usage = usage.unwrap();
    assert_eq!(usage.tokens.input_tokens, 12);
    assert_eq!(usage.tokens.output_tokens, 3);
    assert_eq!(usage.tokens.cache_read_tokens, 7);
}

#[test]
fn stream_passes_whole_events_with_the_model_rewritten() {
    let stream = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"dep\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"model\"}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let info = NativeRequestInfo {
        requested_model: "claude-x".to_owned(),
        stream: true,
    };
    let mut tap = NativeStreamTap::new(&info);
    let mut out = Vec::new();
    // Byte by byte: an event is only forwarded whole.
    for (i, b) in stream.as_bytes().iter().enumerate() {
        let before = out.len();
        tap.push(&[*b], &mut out);
        if out.len() > before {
            assert!(out.ends_with(b"\n\n"), "event cut at byte {i}");
        }
    }
    tap.finish(&mut out);
    let expected = stream.replacen("\"model\":\"dep\"", "\"model\":\"claude-x\"", 1);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert!(tap.ended());
    assert!(!tap.errored());
    let usage = tap.usage().unwrap();
    assert_eq!(usage.tokens.input_tokens, 9);
    assert_eq!(usage.tokens.output_tokens, 4);
}

#[test]
fn stream_tap_reads_events_whatever_their_key_order() {
    // llama.cpp writes keys sorted, `type` last; deltas are forwarded as they are either way.
    let stream = concat!(
        "event: message_start\n",
        "data: {\"message\":{\"id\":\"m\",\"model\":\"dep\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}},\"type\":\"message_start\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"delta\":{\"text\":\"hi\",\"type\":\"text_delta\"},\"index\":0,\"type\":\"content_block_delta\"}\n\n",
        "event: ping\n",
        "data: {\"type\":\"ping\"}\n\n",
        "event: message_delta\n",
        "data: {\"delta\":{\"stop_reason\":\"end_turn\"},\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let info = NativeRequestInfo {
        requested_model: "claude-x".to_owned(),
        stream: true,
    };
    let mut tap = NativeStreamTap::new(&info);
    let mut out = Vec::new();
    tap.push(stream.as_bytes(), &mut out);
    tap.finish(&mut out);
    let expected = stream.replacen("\"model\":\"dep\"", "\"model\":\"claude-x\"", 1);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert!(tap.ended());
    let usage = tap.usage().unwrap();
    assert_eq!(
        (usage.tokens.input_tokens, usage.tokens.output_tokens),
        (3, 2)
    );
}
