//! Fuzz targets `stream` and `tap`: OpenAI chunk streams, as SSE bytes cut into reads at
//! arbitrary points (inside UTF-8 sequences and `\r\n` included), through `SseDecoder` +
//! `StreamTranslator` driven the way `proxy::stream` drives them, and through `OpenAiStreamTap`.
//!
//! Streams are made of segments an upstream sends: text and reasoning deltas, tool calls whose
//! arguments arrive as fragments, as cumulative snapshots or whole (indexes and ids present,
//! missing, reused, out of range), several tool calls in one chunk, `finish_reason` with or
//! without content, usage chunks with empty, null or missing `choices`, Azure's content-filter
//! chunk, choices other than 0, in-band errors, and chunks with odd types anywhere; framed with
//! every line ending, with comments, other fields, empty and non-JSON `data:` lines in between,
//! ending with `[DONE]`, without it, or cut off mid-event.
//!
//! Properties: nothing panics; the bytes out (and the usage and end state) are the same however
//! the input is cut; the translator's output is a valid Anthropic event stream (`message_start`
//! first, blocks that open at 0, 1, 2… and close before the next opens, deltas of the open
//! block's kind, a signature before a thinking block closes, JSON for every tool, `message_delta`
//! then `message_stop` last, or an `error` event last); the tap drops no line it was not asked
//! to drop.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use relayd::translate::{
    OpenAiRequestInfo, OpenAiStreamTap, RequestContext, SseDecoder, StreamTranslator,
    TranslateError, Usage,
};
use serde_json::Value;

use crate::inputs::{
    Shown, Splits, array, lit, member, number, object, odd, pieces, splits, str_lit, str_lit_or,
    text_or,
};
use crate::response::{
    STOP_REASONS, STOPS, UPSTREAM_IDS, arguments, check_stop_sequence, context, finish_reason,
    is_anthropic_id, upstream_tool_name, usage,
};
use crate::sse::count_lines;

/// The message id the translator is given.
const MESSAGE_ID: &str = "msg_fuzz01";

/// One generated case of the `stream` target.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    ctx: RequestContext,
    stream: Shown,
    splits: Splits,
    /// Whether `message_start` is written before the first chunk (the proxy does).
    start_first: bool,
}

/// One generated case of the `tap` target.
#[derive(Debug, Clone)]
pub(crate) struct TapCase {
    info: OpenAiRequestInfo,
    stream: Shown,
    splits: Splits,
}

/// A chunk with these `choices` (as the upstream's envelope would carry them).
fn envelope(choices: &str) -> String {
    format!(
        "{{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1764140000,\"model\":\"qwen3-coder\",\"choices\":{choices}}}"
    )
}

/// A one-choice `choices` array.
fn choice(index: &str, delta: &str, finish_reason: &str) -> String {
    format!(
        "[{{\"index\":{index},\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish_reason}}}]"
    )
}

/// How a tool call's arguments arrive.
#[derive(Debug, Clone, Copy)]
enum ArgumentsMode {
    Fragments,
    Snapshots,
    Whole,
}

/// One tool call as a sequence of chunks.
#[derive(Debug, Clone)]
struct ToolPlan {
    index: Option<String>,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
    mode: ArgumentsMode,
    cuts: Vec<Index>,
    /// Send the id and name again with every fragment (some upstreams do).
    repeat_id: bool,
}

impl ToolPlan {
    fn chunks(&self) -> Vec<String> {
        let mut cuts: Vec<usize> = self
            .cuts
            .iter()
            .map(|c| {
                let mut at = c.index(self.arguments.len() + 1);
                while !self.arguments.is_char_boundary(at) {
                    at -= 1;
                }
                at
            })
            .collect();
        cuts.sort_unstable();
        cuts.push(self.arguments.len());
        let mut parts = Vec::new();
        let mut start = 0;
        for cut in cuts {
            let part = match self.mode {
                ArgumentsMode::Fragments => &self.arguments[start..cut],
                ArgumentsMode::Snapshots => &self.arguments[..cut],
                ArgumentsMode::Whole => &self.arguments[..],
            };
            parts.push(part);
            start = cut;
            if matches!(self.mode, ArgumentsMode::Whole) {
                break;
            }
        }
        parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let mut call = vec![];
                if let Some(index) = &self.index {
                    call.push(format!("\"index\":{index}"));
                }
                let first = i == 0;
                if first || self.repeat_id {
                    if let Some(id) = &self.id {
                        call.push(format!("\"id\":{id}"));
                    }
                    call.push("\"type\":\"function\"".to_owned());
                }
                let mut function = vec![];
                if (first || self.repeat_id)
                    && let Some(name) = &self.name
                {
                    function.push(format!("\"name\":{}", lit(name)));
                }
                function.push(format!("\"arguments\":{}", lit(part)));
                call.push(format!("\"function\":{{{}}}", function.join(",")));
                let delta = format!("{{\"tool_calls\":[{{{}}}]}}", call.join(","));
                envelope(&choice("0", &delta, "null"))
            })
            .collect()
    }
}

fn tool_plan() -> BoxedStrategy<ToolPlan> {
    let index = prop_oneof![
        6 => (0..3u32).prop_map(|i| Some(i.to_string())),
        2 => Just(None),
        1 => select(&["4294967295", "-1", "\"0\"", "4294967296", "1.0", "null"][..])
            .prop_map(|i| Some(i.to_owned())),
    ];
    (
        index,
        prop::option::weighted(0.8, str_lit_or(UPSTREAM_IDS)),
        prop::option::weighted(0.9, upstream_tool_name()),
        arguments(),
        select(
            &[
                ArgumentsMode::Fragments,
                ArgumentsMode::Fragments,
                ArgumentsMode::Snapshots,
                ArgumentsMode::Whole,
            ][..],
        ),
        prop::collection::vec(any::<Index>(), 0..5),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(index, id, name, arguments, mode, cuts, repeat_id)| ToolPlan {
                index,
                id,
                name,
                arguments,
                mode,
                cuts,
                repeat_id,
            },
        )
        .boxed()
}

/// Several whole tool calls in one chunk.
fn parallel_tools() -> BoxedStrategy<Vec<String>> {
    let call = (
        0..4u32,
        str_lit_or(UPSTREAM_IDS),
        upstream_tool_name(),
        arguments(),
    )
        .prop_map(|(index, id, name, arguments)| {
            format!(
                "{{\"index\":{index},\"id\":{id},\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":{}}}}}",
                lit(&name),
                lit(&arguments)
            )
        });
    prop::collection::vec(call, 2..4)
        .prop_map(|calls| {
            let delta = format!("{{\"tool_calls\":[{}]}}", calls.join(","));
            vec![envelope(&choice("0", &delta, "null"))]
        })
        .boxed()
}

/// A chunk with odd types and missing fields anywhere.
fn odd_chunk() -> BoxedStrategy<String> {
    let function = object(vec![
        member("name", str_lit()),
        member("arguments", str_lit()),
    ]);
    let call = object(vec![
        member("index", number()),
        member("id", str_lit()),
        member("function", function),
    ]);
    let delta = object(vec![
        member("content", str_lit()),
        member("reasoning_content", str_lit()),
        member("tool_calls", array(call, 3)),
    ]);
    let choice = object(vec![
        member("index", number()),
        member("delta", delta),
        member("finish_reason", finish_reason()),
    ]);
    prop_oneof![
        6 => object(vec![member("choices", array(choice, 3)), member("usage", usage())]),
        1 => odd(),
    ]
    .boxed()
}

/// One thing an upstream sends, as the chunks it takes.
fn segment() -> BoxedStrategy<Vec<String>> {
    let text = (any::<bool>(), prop::collection::vec(str_lit(), 1..5)).prop_map(|(role, texts)| {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let delta = if role && i == 0 {
                    format!("{{\"role\":\"assistant\",\"content\":{t}}}")
                } else {
                    format!("{{\"content\":{t}}}")
                };
                envelope(&choice("0", &delta, "null"))
            })
            .collect::<Vec<_>>()
    });
    let reasoning = (
        select(&["reasoning_content", "reasoning"][..]),
        prop::collection::vec(prop_oneof![6 => str_lit(), 1 => odd()], 1..4),
    )
        .prop_map(|(key, texts)| {
            texts
                .iter()
                .map(|t| envelope(&choice("0", &format!("{{\"{key}\":{t}}}"), "null")))
                .collect::<Vec<_>>()
        });
    let finish = (
        finish_reason(),
        prop::option::weighted(0.3, str_lit()),
        prop::option::weighted(
            0.3,
            prop_oneof![str_lit_or(STOPS), number(), Just("null".to_owned())],
        ),
    )
        .prop_map(|(reason, content, stop_reason)| {
            let delta = content.map_or_else(|| "{}".to_owned(), |c| format!("{{\"content\":{c}}}"));
            let mut choices = choice("0", &delta, &reason);
            if let Some(stop_reason) = stop_reason {
                choices.truncate(choices.len() - 2);
                choices.push_str(&format!(",\"stop_reason\":{stop_reason}}}]"));
            }
            vec![envelope(&choices)]
        });
    let usage_chunk = (
        usage(),
        select(&["\"choices\":[],", "\"choices\":null,", ""][..]),
    )
        .prop_map(|(usage, choices)| {
            vec![format!(
                "{{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"qwen3-coder\",{choices}\"usage\":{usage}}}"
            )]
        });
    let azure_filter = Just(vec![
        "{\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}"
            .to_owned(),
    ]);
    let other_choice = str_lit().prop_map(|t| {
        vec![envelope(&choice(
            "1",
            &format!("{{\"content\":{t}}}"),
            "null",
        ))]
    });
    let error = prop_oneof![
        str_lit()
            .prop_map(|m| format!("{{\"error\":{{\"message\":{m},\"type\":\"server_error\"}}}}")),
        odd().prop_map(|e| format!("{{\"error\":{e}}}")),
    ]
    .prop_map(|e| vec![e]);
    prop_oneof![
        10 => text,
        4 => reasoning,
        8 => tool_plan().prop_map(|plan| plan.chunks()),
        2 => parallel_tools(),
        4 => finish,
        3 => usage_chunk,
        1 => azure_filter,
        1 => other_choice,
        1 => error,
        2 => odd_chunk().prop_map(|c| vec![c]),
    ]
    .boxed()
}

/// How one event is framed: a space after `data:` or not, and its line ending.
#[derive(Debug, Clone, Copy)]
struct Framing {
    space: bool,
    eol: &'static str,
}

/// SSE lines that are not chunks.
const NOISE: &[&str] = &[
    ": keep-alive\n\n",
    ": OPENROUTER PROCESSING\r\n\r\n",
    "event: message\n",
    "id: 7\n",
    "retry: 10\n",
    "data:\n\n",
    "\n",
    "data: [DONE]\n\n",
    "data: {oops\n\n",
    "data: \"a string\"\n\n",
    "data: {\"choices\":[]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"é\"}}]}\r\rdata: [DONE]\r\r",
];

/// How a stream ends.
#[derive(Debug, Clone)]
enum Ending {
    Done,
    Nothing,
    /// The connection drops at this point.
    Cut(Index),
}

/// An OpenAI SSE stream as bytes.
fn sse_stream() -> BoxedStrategy<Vec<u8>> {
    let framing = (any::<bool>(), select(&["\n", "\n", "\r\n", "\r"][..]))
        .prop_map(|(space, eol)| Framing { space, eol });
    let ending = prop_oneof![
        6 => Just(Ending::Done),
        2 => Just(Ending::Nothing),
        1 => any::<Index>().prop_map(Ending::Cut),
    ];
    let last = prop::option::weighted(
        0.5,
        (finish_reason(), usage()).prop_map(|(reason, usage)| {
            vec![
                envelope(&choice("0", "{}", &reason)),
                format!("{{\"choices\":[],\"usage\":{usage}}}"),
            ]
        }),
    );
    (
        prop::collection::vec(segment(), 0..8),
        last,
        prop::collection::vec(framing, 1..4),
        prop::collection::vec((any::<Index>(), select(NOISE)), 0..3),
        ending,
    )
        .prop_map(|(segments, last, framings, noise, ending)| {
            let chunks: Vec<String> = segments.into_iter().chain(last).flatten().collect();
            let mut events: Vec<String> = chunks
                .iter()
                .enumerate()
                .map(|(i, chunk)| {
                    let f = framings[i % framings.len()];
                    let space = if f.space { " " } else { "" };
                    format!("data:{space}{chunk}{}{}", f.eol, f.eol)
                })
                .collect();
            for (at, line) in noise {
                events.insert(at.index(events.len() + 1), line.to_owned());
            }
            let mut bytes = events.concat().into_bytes();
            match ending {
                Ending::Done => bytes.extend_from_slice(b"data: [DONE]\n\n"),
                Ending::Nothing => {}
                Ending::Cut(at) => bytes.truncate(at.index(bytes.len() + 1)),
            }
            bytes
        })
        .boxed()
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    (context(), sse_stream(), splits(), prop::bool::weighted(0.8))
        .prop_map(|(ctx, stream, splits, start_first)| Case {
            ctx,
            stream: Shown(stream),
            splits,
            start_first,
        })
        .boxed()
}

/// The strategy for [`TapCase`].
pub(crate) fn tap_cases() -> BoxedStrategy<TapCase> {
    (
        text_or(&["qwen3-coder", "gpt-4o"]),
        any::<bool>(),
        sse_stream(),
        splits(),
    )
        .prop_map(
            |(requested_model, added_include_usage, stream, splits)| TapCase {
                info: OpenAiRequestInfo {
                    requested_model,
                    stream: true,
                    added_include_usage,
                },
                stream: Shown(stream),
                splits,
            },
        )
        .boxed()
}

/// What the translator produced for one way of cutting the input.
#[derive(Debug, PartialEq)]
struct Translated {
    out: Shown,
    usage: Usage,
    ended: bool,
}

/// Feeds `reads` as `proxy::stream` does: decode and translate each read; a chunk that does not
/// translate fails the stream; at the end of the input the decoder and the translator are
/// finished. With `stop_at_end`, nothing is read after the read in which the answer ended (what
/// the proxy forwards); without, the rest still goes through (as the translator would see it).
fn translate(
    ctx: &RequestContext,
    reads: &[&[u8]],
    start_first: bool,
    stop_at_end: bool,
) -> Result<Translated, TestCaseError> {
    let mut decoder = SseDecoder::new();
    let mut translator = StreamTranslator::new(ctx, MESSAGE_ID.to_owned());
    let mut out = Vec::new();
    if start_first {
        translator.start(&mut out);
    }
    let mut done = false;
    for read in reads {
        decoder.push(read);
        done =
            drain(&mut decoder, &mut translator, &mut out)? || (stop_at_end && translator.ended());
        if done {
            break;
        }
    }
    if !done {
        decoder.finish();
        drain(&mut decoder, &mut translator, &mut out)?;
        translator.finish(&mut out);
    }
    Ok(Translated {
        out: Shown(out),
        usage: translator.usage(),
        ended: translator.ended(),
    })
}

/// Translates every decoded event; true when one failed the stream.
fn drain(
    decoder: &mut SseDecoder,
    translator: &mut StreamTranslator,
    out: &mut Vec<u8>,
) -> Result<bool, TestCaseError> {
    while let Some(event) = decoder.next_event() {
        match translator.on_data(&event.data, out) {
            Ok(()) => {}
            Err(TranslateError::InvalidUpstream { .. }) => {
                translator.fail("api_error", "the upstream sent a malformed chunk", out);
                return Ok(true);
            }
            Err(other) => {
                return Err(TestCaseError::fail(format!(
                    "a stream error that is not InvalidUpstream: {other:?}"
                )));
            }
        }
    }
    Ok(false)
}

/// Checks every property on one `stream` case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    let bytes = &case.stream.0;
    let reads = pieces(bytes, &case.splits);
    let whole = translate(&case.ctx, &[bytes], case.start_first, true)?;
    let split = translate(&case.ctx, &reads, case.start_first, true)?;
    prop_assert_eq!(
        &whole.out,
        &split.out,
        "the output depends on how the input was cut"
    );
    prop_assert_eq!(whole.ended, split.ended);
    prop_assert!(whole.ended, "the stream did not end");
    // Fed every byte, the translator ends with the same usage however the input was cut. (The
    // proxy stops reading in the read that ended the answer, so what *it* records can depend on
    // the cut: an upstream's usage chunk after the end counts only when it came in that read.)
    let whole_all = translate(&case.ctx, &[bytes], case.start_first, false)?;
    let split_all = translate(&case.ctx, &reads, case.start_first, false)?;
    prop_assert_eq!(
        &whole_all,
        &split_all,
        "the usage depends on how the input was cut"
    );
    prop_assert_eq!(
        &whole.out,
        &whole_all.out,
        "output after the end of the answer"
    );
    check_events(&whole.out.0, &case.ctx).map_err(TestCaseError::fail)
}

/// The block open while checking an event stream.
struct OpenBlock {
    index: u64,
    kind: String,
    deltas: usize,
    signed: bool,
}

/// `out` is a valid Anthropic event stream that has ended.
fn check_events(out: &[u8], ctx: &RequestContext) -> Result<(), String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("not UTF-8: {e}"))?;
    let Some(body) = text.strip_suffix("\n\n") else {
        return Err("does not end with a complete event".to_owned());
    };
    let mut events = Vec::new();
    for event in body.split("\n\n") {
        let (name, data) = event
            .strip_prefix("event: ")
            .and_then(|e| e.split_once("\ndata: "))
            .ok_or_else(|| format!("malformed event {event:?}"))?;
        let data: Value =
            serde_json::from_str(data).map_err(|e| format!("{name} data is not JSON: {e}"))?;
        if data["type"] != name {
            return Err(format!("event {name} carries type {}", data["type"]));
        }
        events.push((name, data));
    }
    let mut open: Option<OpenBlock> = None;
    let mut next_index = 0u64;
    let mut delta_sent = false;
    let last = events.len() - 1;
    for (i, (name, data)) in events.iter().enumerate() {
        let name = *name;
        if i == 0 && name != "message_start" && name != "error" {
            return Err(format!("first event is {name}"));
        }
        if matches!(name, "message_stop" | "error") && i != last {
            return Err(format!("{name} is not the last event"));
        }
        if delta_sent && name != "message_stop" {
            return Err(format!("{name} after message_delta"));
        }
        match name {
            "message_start" => {
                let message = &data["message"];
                if i != 0
                    || message["id"] != MESSAGE_ID
                    || message["model"].as_str() != Some(ctx.requested_model.as_str())
                    || message["content"] != Value::Array(Vec::new())
                    || message["usage"]["input_tokens"]
                        .as_u64()
                        .is_none_or(|n| n == 0)
                {
                    return Err(format!("message_start {data}"));
                }
            }
            "ping" => {}
            "content_block_start" => {
                if open.is_some() {
                    return Err("a block opened before the last one closed".to_owned());
                }
                let index = data["index"].as_u64();
                if index != Some(next_index) {
                    return Err(format!("block index {index:?}, expected {next_index}"));
                }
                let block = &data["content_block"];
                let kind = block["type"].as_str().unwrap_or_default().to_owned();
                let ok = match kind.as_str() {
                    "text" => block["text"] == "",
                    "thinking" => block["thinking"] == "" && block["signature"] == "",
                    "tool_use" => {
                        block["id"].as_str().is_some_and(is_anthropic_id)
                            && block["name"].is_string()
                            && block["input"] == Value::Object(serde_json::Map::new())
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!("content_block_start {data}"));
                }
                open = Some(OpenBlock {
                    index: next_index,
                    kind,
                    deltas: 0,
                    signed: false,
                });
                next_index += 1;
            }
            "content_block_delta" => {
                let Some(block) = open.as_mut().filter(|b| data["index"] == b.index) else {
                    return Err(format!("delta for a block that is not open: {data}"));
                };
                let delta = &data["delta"];
                let ok = match (block.kind.as_str(), delta["type"].as_str()) {
                    ("text", Some("text_delta")) => {
                        delta["text"] != "" && delta["text"].is_string()
                    }
                    ("thinking", Some("thinking_delta")) => {
                        !block.signed && delta["thinking"] != "" && delta["thinking"].is_string()
                    }
                    ("thinking", Some("signature_delta")) => {
                        let first = !block.signed;
                        block.signed = true;
                        first && delta["signature"].is_string()
                    }
                    ("tool_use", Some("input_json_delta")) => delta["partial_json"].is_string(),
                    _ => false,
                };
                if !ok {
                    return Err(format!("{} block got {data}", block.kind));
                }
                block.deltas += 1;
            }
            "content_block_stop" => {
                let Some(block) = open.take().filter(|b| data["index"] == b.index) else {
                    return Err(format!("stop for a block that is not open: {data}"));
                };
                if block.kind == "thinking" && !block.signed {
                    return Err("a thinking block closed without a signature".to_owned());
                }
                if block.kind == "tool_use" && block.deltas == 0 {
                    return Err("a tool_use block closed without any input JSON".to_owned());
                }
            }
            "message_delta" => {
                if open.is_some() {
                    return Err("message_delta with a block open".to_owned());
                }
                let stop_reason = data["delta"]["stop_reason"].as_str().unwrap_or_default();
                if !STOP_REASONS.contains(&stop_reason) {
                    return Err(format!("stop_reason {stop_reason:?}"));
                }
                check_stop_sequence(stop_reason, &data["delta"]["stop_sequence"], ctx)?;
                let usage = &data["usage"];
                if usage["input_tokens"].as_u64().is_none()
                    || usage["output_tokens"].as_u64().is_none()
                {
                    return Err(format!("message_delta usage {usage}"));
                }
                delta_sent = true;
            }
            "message_stop" => {
                if !delta_sent {
                    return Err("message_stop without message_delta".to_owned());
                }
            }
            "error" => {
                if !data["error"]["type"].is_string() || !data["error"]["message"].is_string() {
                    return Err(format!("error {data}"));
                }
            }
            other => return Err(format!("unknown event {other}")),
        }
    }
    match events.get(last).map(|(name, _)| *name) {
        Some("message_stop" | "error") => Ok(()),
        other => Err(format!("the stream ended with {other:?}")),
    }
}

/// What the tap forwarded for one way of cutting the input.
#[derive(Debug, PartialEq)]
struct Tapped {
    out: Shown,
    usage: Option<Usage>,
}

fn tap(info: &OpenAiRequestInfo, reads: &[&[u8]]) -> Tapped {
    let mut tap = OpenAiStreamTap::new(info);
    let mut out = Vec::new();
    for read in reads {
        tap.push(read, &mut out);
    }
    tap.finish(&mut out);
    Tapped {
        out: Shown(out),
        usage: tap.usage(),
    }
}

/// Checks every property on one `tap` case.
pub(crate) fn check_tap(case: &TapCase) -> Result<(), TestCaseError> {
    let bytes = &case.stream.0;
    let whole = tap(&case.info, &[bytes]);
    let split = tap(&case.info, &pieces(bytes, &case.splits));
    prop_assert_eq!(
        &whole,
        &split,
        "the output depends on how the input was cut"
    );
    let (lines_in, lines_out) = (count_lines(bytes), count_lines(&whole.out.0));
    if case.info.added_include_usage {
        prop_assert!(lines_out <= lines_in, "the tap added lines");
    } else {
        prop_assert_eq!(
            lines_in,
            lines_out,
            "the tap dropped lines it was not asked to"
        );
    }
    Ok(())
}
