//! Same-format passthrough for OpenAI clients: the request and response stay as they are except for
//! the model name (the upstream gets the account's deployment, the client sees the name it asked
//! for) and `stream_options.include_usage` (always on upstream, so usage is always known).
//!
//! Bytes are forwarded as they came wherever possible: the model value is spliced in place using
//! the position of the parsed `RawValue` inside the payload, so key order, whitespace and unknown
//! fields pass through untouched.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{is_string, push_str};
use super::response::{OpenAiUsage, Timings};
use super::sse::LineSplitter;
use super::{TranslateError, Usage, describe_json_error};

/// What the proxy needs to remember about an OpenAI-format request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiRequestInfo {
    /// The model name the client asked for.
    pub requested_model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// We turned on `stream_options.include_usage`: the client did not ask for the usage-only chunk,
    /// so [`OpenAiStreamTap`] removes it.
    pub added_include_usage: bool,
}

/// Rewrites an OpenAI chat request for the upstream: `model` becomes `deployment`, a streaming
/// request gets `stream_options.include_usage = true`, and `max_tokens` /
/// `max_completion_tokens` above `max_tokens_cap` (what the upstream's context window leaves)
/// are lowered to it. Other keys are copied byte for byte.
///
/// Errors are [`TranslateError::InvalidRequest`] (HTTP 400).
pub fn prepare_openai_request(
    body: &[u8],
    deployment: &str,
    max_tokens_cap: Option<u32>,
) -> Result<(Vec<u8>, OpenAiRequestInfo), TranslateError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| TranslateError::request("body", format!("not UTF-8: {e}")))?;
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| TranslateError::request("body", describe_json_error(&e)))?;
    let mut requested_model = None;
    let mut stream = false;
    let mut stream_options = None;
    for (key, value) in &entries {
        match key.as_ref() {
            "model" => requested_model = Some(parse::<String>(value, "model")?),
            "stream" => stream = parse::<Option<bool>>(value, "stream")?.unwrap_or(false),
            "stream_options" => stream_options = Some(*value),
            _ => {}
        }
    }
    let Some(requested_model) = requested_model else {
        return Err(TranslateError::request("model", "field required"));
    };
    let (new_stream_options, added_include_usage) = if stream {
        with_include_usage(stream_options)?
    } else {
        (None, false)
    };
    let rewrite = Rewrite {
        deployment,
        stream_options: new_stream_options.as_deref(),
        max_tokens_cap,
    };
    Ok((
        rewrite.write(&entries, body.len()),
        OpenAiRequestInfo {
            requested_model,
            stream,
            added_include_usage,
        },
    ))
}

/// The `stream_options` a streaming request is sent with (`None`: the client's, unchanged), and
/// whether `include_usage` was added to it.
fn with_include_usage(
    stream_options: Option<&RawValue>,
) -> Result<(Option<Cow<'static, str>>, bool), TranslateError> {
    match stream_options.filter(|raw| raw.get() != "null") {
        None => Ok((Some(Cow::Borrowed("{\"include_usage\":true}")), true)),
        Some(raw) => {
            let mut options: serde_json::Map<String, serde_json::Value> =
                parse(raw, "stream_options")?;
            if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
                return Ok((None, false));
            }
            options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
            Ok((
                Some(Cow::Owned(serde_json::Value::Object(options).to_string())),
                true,
            ))
        }
    }
}

/// What changes on the way upstream.
struct Rewrite<'a> {
    deployment: &'a str,
    /// Replaces (or is added as) `stream_options`.
    stream_options: Option<&'a str>,
    max_tokens_cap: Option<u32>,
}

impl Rewrite<'_> {
    /// The body with the changes applied, every other entry copied as it came.
    fn write(&self, entries: &[(Cow<'_, str>, &RawValue)], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 48);
        out.push(b'{');
        let mut wrote_stream_options = false;
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(&mut out, key);
            out.push(b':');
            match (key.as_ref(), self.stream_options) {
                ("model", _) => push_str(&mut out, self.deployment),
                ("stream_options", Some(options)) => {
                    out.extend_from_slice(options.as_bytes());
                    wrote_stream_options = true;
                }
                ("max_tokens" | "max_completion_tokens", _) => self.max_tokens(&mut out, value),
                _ => out.extend_from_slice(value.get().as_bytes()),
            }
        }
        if let Some(options) = self.stream_options
            && !wrote_stream_options
        {
            if !entries.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"stream_options\":");
            out.extend_from_slice(options.as_bytes());
        }
        out.push(b'}');
        out
    }

    /// A token limit, lowered to the cap when above it (anything that is not a number is the
    /// upstream's to judge).
    fn max_tokens(&self, out: &mut Vec<u8>, value: &RawValue) {
        match (self.max_tokens_cap, value.get().parse::<u64>()) {
            (Some(cap), Ok(asked)) if asked > u64::from(cap) => {
                out.extend_from_slice(itoa::Buffer::new().format(cap).as_bytes());
            }
            _ => out.extend_from_slice(value.get().as_bytes()),
        }
    }
}

/// Rewrites a non-streaming OpenAI response for the client (`model` back to the requested name)
/// and reads its usage (`None` when the upstream reported none).
///
/// Errors are [`TranslateError::InvalidUpstream`] (HTTP 502).
pub fn rewrite_openai_response(
    body: &[u8],
    requested_model: &str,
) -> Result<(Vec<u8>, Option<Usage>), TranslateError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| TranslateError::upstream("body", format!("not UTF-8: {e}")))?;
    let parsed: ModelAndUsage<'_> = serde_json::from_str(text)
        .map_err(|e| TranslateError::upstream("body", describe_json_error(&e)))?;
    let mut out = Vec::with_capacity(body.len() + requested_model.len());
    splice_model(&mut out, text, parsed.model, requested_model);
    let timings = parsed.timings;
    Ok((
        out,
        parsed.usage.map(|u| u.with_timings(timings).to_usage()),
    ))
}

/// Watches an OpenAI SSE stream on its way to the client: rewrites `model` in each chunk, removes
/// the usage-only chunk when the client did not ask for it, and records usage.
///
/// Only complete lines are forwarded (a chunk is one `data:` line), so [`OpenAiStreamTap::push`]
/// may return nothing for a read that ends mid-line.
#[derive(Debug)]
pub struct OpenAiStreamTap {
    lines: LineSplitter,
    requested_model: String,
    drop_usage_chunk: bool,
    /// The previous line was a dropped `data:` line: drop the blank line that ends its event too.
    skip_blank: bool,
    usage: Option<Usage>,
}

impl OpenAiStreamTap {
    /// A tap for the answer to the request described by `info`.
    pub fn new(info: &OpenAiRequestInfo) -> Self {
        Self {
            lines: LineSplitter::default(),
            requested_model: info.requested_model.clone(),
            drop_usage_chunk: info.added_include_usage,
            skip_blank: false,
            usage: None,
        }
    }

    /// Feeds upstream bytes; appends the bytes to forward to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.lines.push(bytes);
        self.drain(false, out);
    }

    /// The upstream ended: forwards whatever is left (a last line without terminator).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.drain(true, out);
    }

    /// Usage reported by the upstream so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Bytes of an unfinished line held back, for the caller to bound.
    pub fn pending_bytes(&self) -> usize {
        self.lines.pending_bytes()
    }

    fn drain(&mut self, at_eof: bool, out: &mut Vec<u8>) {
        while let Some(line) = self.lines.next_line(at_eof) {
            let content = self.lines.bytes(line.content.clone());
            if content.is_empty() {
                if !std::mem::take(&mut self.skip_blank) {
                    out.extend_from_slice(self.lines.bytes(line.whole));
                }
                continue;
            }
            self.skip_blank = false;
            let payload = content
                .strip_prefix(b"data:")
                .map(|p| p.strip_prefix(b" ").unwrap_or(p));
            let chunk = payload
                .filter(|p| p.first() == Some(&b'{'))
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| {
                    serde_json::from_str::<ModelAndUsage<'_>>(p)
                        .ok()
                        .map(|parsed| (p, parsed))
                });
            let Some((payload, parsed)) = chunk else {
                out.extend_from_slice(self.lines.bytes(line.whole));
                continue;
            };
            if let Some(usage) = parsed.usage {
                self.usage = Some(usage.with_timings(parsed.timings).to_usage());
                if self.drop_usage_chunk && parsed.choices.is_none_or(|n| n == 0) {
                    self.skip_blank = true;
                    continue;
                }
            }
            let whole = self.lines.bytes(line.whole.clone());
            let prefix_len = content.len() - payload.len();
            out.extend_from_slice(&whole[..prefix_len]);
            splice_model(out, payload, parsed.model, &self.requested_model);
            out.extend_from_slice(&whole[content.len()..]);
        }
    }
}

/// Copies `text` with the string value `model` (a sub-slice of `text`) replaced by `replacement`.
pub(super) fn splice_model(
    out: &mut Vec<u8>,
    text: &str,
    model: Option<&RawValue>,
    replacement: &str,
) {
    let Some(model) = model.filter(|m| is_string(m)) else {
        out.extend_from_slice(text.as_bytes());
        return;
    };
    // `model` borrows from `text`, so its address gives its position without searching.
    let start = (model.get().as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let end = start + model.get().len();
    if end > text.len() {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.extend_from_slice(&text.as_bytes()[..start]);
    push_str(out, replacement);
    out.extend_from_slice(&text.as_bytes()[end..]);
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawValue, path: &str) -> Result<T, TranslateError> {
    serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::request(path, describe_json_error(&e)))
}

/// The parts of a response or chunk the passthrough reads.
#[derive(Deserialize)]
struct ModelAndUsage<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    usage: Option<OpenAiUsage>,
    timings: Option<Timings>,
    #[serde(default, deserialize_with = "count_choices")]
    choices: Option<usize>,
}

fn count_choices<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    let choices: Option<Vec<IgnoredAny>> = Deserialize::deserialize(deserializer)?;
    Ok(choices.map(|c| c.len()))
}

/// A JSON object's members in order, values left raw.
pub(super) struct Entries<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}
