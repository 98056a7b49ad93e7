//! Criterion benchmarks of the translation hot paths, the work relayd adds on top of forwarding:
//! request translation of a real ~80 KB Claude Code tool turn and of the ~1 KB Claude-Code-shaped
//! request the load benchmark sends, a 1,000-chunk OpenAI stream through `SseDecoder` +
//! `StreamTranslator`, and local `count_tokens` on both bodies.
//!
//! Run with `cargo bench -p relayd --bench translate` (README, "Benchmarks"). Not part of
//! `cargo test`, which only compiles this file.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relayd::translate::{
    ReasoningMode, RequestContext, SseDecoder, StreamTranslator, UpstreamOptions,
    anthropic_to_openai, count_tokens,
};
use serde_json::{Value, json};

/// The fixture file: a recorded request (method, path, headers, body).
const TOOL_TURN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/claude-code/tool_turn1_request.json"
);

/// A TCP segment's worth of payload: how the stream arrives from a local upstream.
const READ_SIZE: usize = 1460;

/// Chunks in the synthetic stream.
const STREAM_CHUNKS: usize = 1_000;

fn opts() -> UpstreamOptions<'static> {
    UpstreamOptions {
        deployment: "qwen3-coder",
        max_output_tokens: Some(32_768),
        use_max_completion_tokens: false,
        reasoning: ReasoningMode::Drop,
        send_reasoning_content: false,
    }
}

/// The Anthropic body Claude Code sent for its first tool turn (compact JSON, keys in order).
fn tool_turn_body() -> Vec<u8> {
    let text = std::fs::read_to_string(TOOL_TURN).expect("fixture readable");
    let file: Value = serde_json::from_str(&text).expect("fixture is JSON");
    serde_json::to_vec(&file["body"]).expect("serializable")
}

/// The ~1 KB three-message request the load benchmark (`tests/benches/load.rs`) sends: a
/// two-block system prompt, text-block messages, metadata.
fn small_body() -> Vec<u8> {
    let text = include_str!("../testdata/bench/claude_code_1kb.json");
    let body: Value = serde_json::from_str(text).expect("bench request is JSON");
    serde_json::to_vec(&body).expect("serializable")
}

fn chunk(delta: &Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-3f1c2a9b7e5d4c01",
        "object": "chat.completion.chunk",
        "created": 1_764_140_000,
        "model": "qwen3-coder",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
    })
}

/// A vLLM-shaped stream of exactly [`STREAM_CHUNKS`] `data:` events plus `[DONE]`: a role chunk,
/// text deltas of a few words each, a tool call whose arguments arrive in small fragments, the
/// `tool_calls` finish, and the usage-only chunk.
fn openai_stream() -> Vec<u8> {
    const TOOL_FRAGMENTS: usize = 120;
    let mut chunks = vec![chunk(&json!({"role": "assistant", "content": ""}), None)];
    let words = [
        " Let", " me", " look", " at", " the", " failing", " test", " first", ",", " then", " the",
        " module", " it", " covers", ".", "\n\n", "The", " error", " says", " `", "expected", "`",
        " is", " ", "42", " but", " got", " ", "41", ":", " an", " off", "-by", "-one", " in",
        " the", " loop", " bound", ".",
    ];
    // Chunks left for text: total minus role, tool start, fragments, finish and usage.
    let text_chunks = STREAM_CHUNKS - 1 - 1 - TOOL_FRAGMENTS - 1 - 1;
    for i in 0..text_chunks {
        chunk_text(&mut chunks, words[i % words.len()]);
    }
    chunks.push(chunk(
        &json!({"tool_calls": [{"index": 0, "id": "call_9b1f0c2d", "type": "function",
            "function": {"name": "Read", "arguments": ""}}]}),
        None,
    ));
    let arguments = format!(
        "{{\"file_path\": \"/home/dev/project/src/{}.rs\", \"offset\": 120, \"limit\": 400}}",
        "parser/expressions/binary_operators".repeat(8)
    );
    let bytes = arguments.as_bytes();
    let step = bytes.len().div_ceil(TOOL_FRAGMENTS);
    let mut fragments = 0;
    for piece in bytes.chunks(step) {
        let piece = std::str::from_utf8(piece).expect("ASCII arguments");
        chunks.push(chunk(
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        ));
        fragments += 1;
    }
    // Pad with empty fragments if rounding left fewer pieces (keeps the count exact).
    for _ in fragments..TOOL_FRAGMENTS {
        chunks.push(chunk(
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}),
            None,
        ));
    }
    chunks.push(chunk(&json!({}), Some("tool_calls")));
    chunks.push(json!({
        "id": "chatcmpl-3f1c2a9b7e5d4c01", "object": "chat.completion.chunk",
        "created": 1_764_140_000, "model": "qwen3-coder", "choices": [],
        "usage": {"prompt_tokens": 21_733, "completion_tokens": 1_002, "total_tokens": 22_735,
            "prompt_tokens_details": {"cached_tokens": 21_504}}
    }));
    assert_eq!(chunks.len(), STREAM_CHUNKS);
    let mut out = Vec::new();
    for c in &chunks {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(c).expect("serializable"));
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn chunk_text(chunks: &mut Vec<Value>, text: &str) {
    chunks.push(chunk(&json!({"content": text}), None));
}

/// Decodes and translates `stream` fed in [`READ_SIZE`] reads; returns the Anthropic bytes written.
fn translate_stream(stream: &[u8], ctx: &RequestContext) -> usize {
    let mut decoder = SseDecoder::new();
    let mut translator = StreamTranslator::new(ctx, "msg_0123456789abcdef01234567".to_owned());
    let mut out = Vec::with_capacity(4096);
    let mut written = 0;
    translator.start(&mut out);
    for read in stream.chunks(READ_SIZE) {
        decoder.push(read);
        while let Some(event) = decoder.next_event() {
            translator
                .on_data(&event.data, &mut out)
                .expect("stream translates");
        }
        // The proxy hands each read's output to hyper and starts a fresh buffer.
        written += out.len();
        out.clear();
    }
    decoder.finish();
    while let Some(event) = decoder.next_event() {
        translator
            .on_data(&event.data, &mut out)
            .expect("stream translates");
    }
    translator.finish(&mut out);
    assert!(translator.ended(), "stream ended");
    written + out.len()
}

fn request_translation(c: &mut Criterion) {
    let body = tool_turn_body();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("anthropic_to_openai/tool_turn1_80KB", |b| {
        b.iter(|| anthropic_to_openai(black_box(&body), &opts()).expect("translates"));
    });
    group.bench_function("count_tokens/tool_turn1_80KB", |b| {
        b.iter(|| count_tokens(black_box(&body)).expect("counts"));
    });
    group.finish();

    let body = small_body();
    let mut group = c.benchmark_group("request_small");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("anthropic_to_openai/claude_code_1KB", |b| {
        b.iter(|| anthropic_to_openai(black_box(&body), &opts()).expect("translates"));
    });
    group.bench_function("count_tokens/claude_code_1KB", |b| {
        b.iter(|| count_tokens(black_box(&body)).expect("counts"));
    });
    group.finish();
}

fn stream_translation(c: &mut Criterion) {
    let stream = openai_stream();
    // A streaming request with tools, so the translator has a real context (tool names etc.).
    let mut request: Value = serde_json::from_slice(&tool_turn_body()).expect("JSON");
    request["stream"] = Value::Bool(true);
    let request = serde_json::to_vec(&request).expect("serializable");
    let (_, ctx) = anthropic_to_openai(&request, &opts()).expect("translates");
    assert!(translate_stream(&stream, &ctx) > 0);
    let mut group = c.benchmark_group("stream");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("openai_to_anthropic/1000_chunks", |b| {
        b.iter(|| translate_stream(black_box(&stream), &ctx));
    });
    group.finish();
}

criterion_group!(benches, request_translation, stream_translation);
criterion_main!(benches);
