//! Local token estimate for `POST /v1/messages/count_tokens` (and for `message_start` before the
//! upstream reports real usage).
//!
//! Claude Code sends dozens of these at start-up, so the count is one streaming pass of serde over
//! the body with a visitor that only adds numbers: no tree, no per-string allocation. The heuristic
//! is the usual one for BPE tokenizers: about 4 ASCII bytes per token, one token per non-ASCII
//! character (CJK is roughly one token per character), a little overhead per message, per tool and
//! per JSON object, and a flat cost for base64 images (whose size in tokens does not depend on
//! their byte length the way text does).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{TranslateError, describe_json_error};

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

#[derive(Deserialize)]
struct CountedBody {
    system: Option<Count>,
    messages: Option<Vec<Count>>,
    tools: Option<Vec<Count>>,
}

/// The token estimate of any JSON value.
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(CountVisitor { image_data: false })
            .map(Count)
    }
}

/// The value under a `data` key: base64 image data when it looks like it.
struct DataCount(u64);

impl<'de> Deserialize<'de> for DataCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(CountVisitor { image_data: true })
            .map(DataCount)
    }
}

struct CountVisitor {
    image_data: bool,
}

impl<'de> Visitor<'de> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        // Base64 is long and has no spaces; document text has spaces.
        if self.image_data && v.len() > 256 && !v.as_bytes()[..256].contains(&b' ') {
            return Ok(IMAGE_TOKENS);
        }
        Ok(text_tokens(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<u64, E> {
        Ok(1)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut total = 0;
        while let Some(Count(n)) = seq.next_element()? {
            total += n;
        }
        Ok(total)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut total = PER_OBJECT;
        while let Some(key) = map.next_key::<Key>()? {
            total += match key {
                Key::Data => map.next_value::<DataCount>()?.0,
                // Block types and the like are structure, not prompt text.
                Key::Type | Key::CacheControl => {
                    map.next_value::<de::IgnoredAny>()?;
                    0
                }
                Key::Other(n) => n + map.next_value::<Count>()?.0,
            };
        }
        Ok(total)
    }
}

/// Object keys that get special treatment; any other key costs its own text (schema property
/// names are real prompt tokens).
enum Key {
    Data,
    Type,
    CacheControl,
    Other(u64),
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
                Ok(match v {
                    "data" => Key::Data,
                    "type" => Key::Type,
                    "cache_control" => Key::CacheControl,
                    other => Key::Other(text_tokens(other)),
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varies_with_content_and_is_never_zero() {
        let small = count_tokens(br#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap_or(0);
        let large = count_tokens(
            br#"{"messages":[{"role":"user","content":"hi there, how are you doing today?"}]}"#,
        )
        .unwrap_or(0);
        assert!(small > 0 && large > small, "{small} {large}");
        assert!(count_tokens(b"{}").unwrap_or(0) >= 1);
        let with_tools = count_tokens(
            br#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"Bash","input_schema":{"type":"object"}}]}"#,
        )
        .unwrap_or(0);
        assert!(with_tools > small);
        assert!(count_tokens(b"{not json").is_err());
        assert_eq!(text_tokens("日本語"), 3);
    }

    #[test]
    fn base64_images_cost_a_flat_amount() {
        let data = "A".repeat(400_000);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{data}"}}}}]}}]}}"#
        );
        let n = count_tokens(body.as_bytes()).unwrap_or(0);
        assert!((IMAGE_TOKENS..IMAGE_TOKENS + 50).contains(&n), "{n}");
    }
}
