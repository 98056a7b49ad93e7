//! Local token estimate for `POST /v1/messages/count_tokens` (and for `message_start` before the
//! upstream reports real usage).
//!
//! The heuristic is the usual one for BPE tokenizers: about 4 ASCII bytes per token, one token per
//! non-ASCII character (CJK is roughly one token per character), a little overhead per message, per
//! tool and per JSON object, and a flat cost for base64 images (whose size in tokens does not depend
//! on their byte length the way text does).
//!
//! Claude Code sends dozens of these at start-up and every translated request needs one, so the
//! count is a hand-written byte scan (`Scanner`) over the raw `system`, `messages` and `tools`
//! values: no tree, 8 bytes of string at a time, and no allocation unless a key or image data has
//! escapes. [`anthropic_to_openai`] hands it the raw values it has already split off;
//! [`count_tokens`] splits them with one serde pass that only skips. The rules themselves are
//! defined by a serde visitor (`count_with_serde`), which also takes over (and words the error)
//! whenever the body is invalid or holds something only serde may judge: the scan and the visitor
//! return the same number for every input.
//!
//! [`anthropic_to_openai`]: super::anthropic_to_openai

mod scan;
mod visit;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use super::{TranslateError, describe_json_error};
use scan::scanner;
use visit::CountedBody;

/// Roughly what one image costs on Anthropic models (a ~1.2 megapixel image ≈ 1,600 tokens).
const IMAGE_TOKENS: u64 = 1_600;
/// Role markers and separators of one message.
const PER_MESSAGE: u64 = 4;
/// Wrapping of one tool definition in the prompt.
const PER_TOOL: u64 = 8;
/// Structure of one content block or schema object.
const PER_OBJECT: u64 = 2;

/// Estimates the input tokens of an Anthropic request body (`system`, `messages` and `tools`; other
/// keys cost nothing). Never 0 for a body with any content. Invalid JSON is a
/// [`TranslateError::InvalidRequest`] (HTTP 400).
pub fn count_tokens(body: &[u8]) -> Result<u64, TranslateError> {
    if let Ok(raw) = serde_json::from_slice::<RawBody<'_>>(body)
        && let Some(n) = estimate(raw.system, raw.messages, raw.tools)
    {
        return Ok(n);
    }
    count_with_serde(body)
}

/// [`count_tokens`] of a body that parsed, given its `system`, `messages` and `tools` values
/// (absent or `null` is `None`). `None` when a value holds something only serde may judge (see
/// [`scan::Scanner`]) or a list is not an array: the caller then counts with [`count_with_serde`], which
/// gives the answer (or the error) for the whole body.
pub(crate) fn estimate(
    system: Option<&RawValue>,
    messages: Option<&RawValue>,
    tools: Option<&RawValue>,
) -> Option<u64> {
    let mut total = match system {
        Some(raw) => scanner(raw).value(false, 0)? + PER_MESSAGE,
        None => 0,
    };
    if let Some(raw) = messages {
        total += scanner(raw).list(PER_MESSAGE)?;
    }
    if let Some(raw) = tools {
        total += scanner(raw).list(PER_TOOL)?;
    }
    Some(total.max(1))
}

/// The reference for [`count_tokens`]: the same count (or error) from the serde visitor alone,
/// without the byte scan. Slower; the proxy has no use for it. Public so the fuzz bench
/// (`relayd/benches/fuzz`) can check that the two agree on every body it generates.
pub fn count_tokens_reference(body: &[u8]) -> Result<u64, TranslateError> {
    count_with_serde(body)
}

/// The reference implementation of [`count_tokens`]: one streaming serde pass with a visitor that
/// only adds numbers.
pub(crate) fn count_with_serde(body: &[u8]) -> Result<u64, TranslateError> {
    let parsed: CountedBody = serde_json::from_slice(body)
        .map_err(|e| TranslateError::request("body", describe_json_error(&e)))?;
    let messages = parsed.messages.unwrap_or_default();
    let tools = parsed.tools.unwrap_or_default();
    let total = parsed.system.map_or(0, |c| c.0 + PER_MESSAGE)
        + messages.iter().map(|c| c.0 + PER_MESSAGE).sum::<u64>()
        + tools.iter().map(|c| c.0 + PER_TOOL).sum::<u64>();
    Ok(total.max(1))
}

/// Tokens of a piece of text.
pub fn text_tokens(text: &str) -> u64 {
    let mut ascii = 0u64;
    let mut other_chars = 0u64;
    for &b in text.as_bytes() {
        if b < 0x80 {
            ascii += 1;
        } else if b >= 0xc0 {
            other_chars += 1; // leading byte of a multi-byte character
        }
    }
    ascii.div_ceil(4) + other_chars
}

/// Tokens of a string value; `image_data` when it is the value of a `data` key.
fn string_tokens(text: &str, image_data: bool) -> u64 {
    // Base64 is long and has no spaces; document text has spaces.
    if image_data && text.len() > 256 && !text.as_bytes()[..256].contains(&b' ') {
        return IMAGE_TOKENS;
    }
    text_tokens(text)
}

/// The three values that cost tokens, kept raw for [`estimate`].
#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
}

/// Object keys that get special treatment; any other key costs its own text (schema property
/// names are real prompt tokens).
enum Key {
    Data,
    Type,
    CacheControl,
    Other(u64),
}

impl Key {
    fn of(key: &str) -> Self {
        match key {
            "data" => Key::Data,
            "type" => Key::Type,
            "cache_control" => Key::CacheControl,
            other => Key::Other(text_tokens(other)),
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key::of(v))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
