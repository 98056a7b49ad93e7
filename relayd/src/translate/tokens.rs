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

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{HIGH_BITS, has_byte, word};
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
    if let Ok(raw) = serde_json::from_slice::<RawBody<'_>>(body)
        && let Some(n) = estimate(raw.system, raw.messages, raw.tools)
    {
        return Ok(n);
    }
    count_with_serde(body)
}

/// [`count_tokens`] of a body that parsed, given its `system`, `messages` and `tools` values
/// (absent or `null` is `None`). `None` when a value holds something only serde may judge (see
/// [`Scanner`]) or a list is not an array: the caller then counts with [`count_with_serde`], which
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

/// Deepest nesting the scanner follows inside one value. The visitor is limited to 128 levels
/// counting `body` and `messages` above the value, so anything near that is left to serde.
const MAX_DEPTH: usize = 100;

/// Longest number the scanner accepts: longer ones (and exponents) may be out of `f64`'s range,
/// which the visitor reports as an error.
const MAX_NUMBER_LEN: usize = 64;

fn scanner(raw: &RawValue) -> Scanner<'_> {
    Scanner {
        text: raw.get(),
        pos: 0,
    }
}

/// A byte scanner over JSON that a serde parse has already accepted, computing exactly what the
/// visitor below computes.
///
/// serde skipped the raw value without judging everything the visitor will: surrogate escapes must
/// pair up, numbers must fit an `f64`, nesting must stay under the recursion limit. The scanner
/// returns `None` on any of these (and on anything unexpected), never a different number. Rare
/// cases that need the decoded text (escaped keys, escaped image data) are decoded by serde.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

/// ASCII bytes and UTF-8 leading bytes of a string, as [`text_tokens`] counts them.
#[derive(Default)]
struct StrStats {
    ascii: u64,
    lead: u64,
    escaped: bool,
}

impl StrStats {
    fn tokens(&self) -> u64 {
        self.ascii.div_ceil(4) + self.lead
    }

    /// Adds `words` 8-byte words whose non-ASCII and leading bytes are counted per byte lane in
    /// `high` and `lead` (see [`Scanner::count_run`]).
    fn add_words(&mut self, words: u64, high: u64, lead: u64) {
        self.ascii += 8 * words - lane_sum(high);
        self.lead += lane_sum(lead);
    }

    /// Adds one decoded character given its code point.
    fn add_char(&mut self, code: u32) {
        if code < 0x80 {
            self.ascii += 1;
        } else {
            self.lead += 1;
        }
    }
}

/// The sum of the eight byte lanes of `x`.
fn lane_sum(x: u64) -> u64 {
    const PAIRS: u64 = 0x00ff_00ff_00ff_00ff;
    // Four 16-bit lanes of at most 510 each; the multiplication adds them all into the top lane.
    let pairs = (x & PAIRS) + ((x >> 8) & PAIRS);
    pairs.wrapping_mul(0x0001_0001_0001_0001) >> 48
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace (not consumed).
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Consumes `expected` as the next non-whitespace byte.
    fn eat(&mut self, expected: u8) -> Option<()> {
        (self.peek()? == expected).then(|| self.pos += 1)
    }

    fn value(&mut self, image_data: bool, depth: usize) -> Option<u64> {
        match self.peek()? {
            b'"' => self.string(image_data),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true", 1),
            b'f' => self.literal(b"false", 1),
            b'n' => self.literal(b"null", 0),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8], tokens: u64) -> Option<u64> {
        let end = self.pos + word.len();
        (self.bytes().get(self.pos..end)? == word).then(|| {
            self.pos = end;
            tokens
        })
    }

    fn number(&mut self) -> Option<u64> {
        let start = self.pos;
        while let Some(b'0'..=b'9' | b'-' | b'.') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
        let len = self.pos - start;
        let exponent = matches!(self.bytes().get(self.pos), Some(b'e' | b'E' | b'+'));
        (len > 0 && len <= MAX_NUMBER_LEN && !exponent).then_some(1)
    }

    /// The count of a top-level list (`messages`, `tools`): each element's plus `per_item`.
    fn list(&mut self, per_item: u64) -> Option<u64> {
        self.items(1, per_item)
    }

    fn array(&mut self, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.items(depth, 0)
    }

    /// The elements of an array at `depth`, each counted plus `per_item`.
    fn items(&mut self, depth: usize, per_item: u64) -> Option<u64> {
        self.eat(b'[')?;
        let mut total = 0;
        if self.eat(b']').is_some() {
            return Some(total);
        }
        loop {
            total += self.value(false, depth)? + per_item;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(total);
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        let mut total = PER_OBJECT;
        if self.eat(b'}').is_some() {
            return Some(total);
        }
        loop {
            let key = self.key()?;
            self.eat(b':')?;
            total += match key {
                Key::Data => self.value(true, depth)?,
                Key::Type | Key::CacheControl => {
                    self.value(false, depth)?;
                    0
                }
                Key::Other(n) => n + self.value(false, depth)?,
            };
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(total);
                }
                _ => return None,
            }
        }
    }

    fn key(&mut self) -> Option<Key> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos;
        let stats = self.string_stats()?;
        let literal = self.text.get(start..self.pos)?;
        if stats.escaped {
            let key: Cow<'_, str> = serde_json::from_str(literal).ok()?;
            return Some(Key::of(&key));
        }
        Some(match &literal[1..literal.len() - 1] {
            "data" => Key::Data,
            "type" => Key::Type,
            "cache_control" => Key::CacheControl,
            _ => Key::Other(stats.tokens()),
        })
    }

    fn string(&mut self, image_data: bool) -> Option<u64> {
        let start = self.pos;
        let stats = self.string_stats()?;
        if !image_data {
            return Some(stats.tokens());
        }
        // The image rule looks at the decoded text, which is the raw text when nothing is escaped.
        let literal = self.text.get(start..self.pos)?;
        if stats.escaped {
            let text: Cow<'_, str> = serde_json::from_str(literal).ok()?;
            return Some(string_tokens(&text, true));
        }
        Some(string_tokens(&literal[1..literal.len() - 1], true))
    }

    /// Counts a string literal starting at its opening quote and moves past its closing quote.
    fn string_stats(&mut self) -> Option<StrStats> {
        let mut stats = StrStats::default();
        self.pos += 1;
        loop {
            self.count_run(&mut stats);
            match *self.bytes().get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(stats);
                }
                _ => {
                    stats.escaped = true;
                    self.escape(&mut stats)?;
                }
            }
        }
    }

    /// Counts the bytes up to the next `"` or `\`.
    ///
    /// Text between escapes is usually long, so it goes 8 bytes at a time: each word is checked
    /// for a `"` or `\`, and its non-ASCII bytes (high bit set) and leading bytes of multi-byte
    /// characters (two high bits set) are added up per byte lane. A lane gains at most 1 per word,
    /// so the lanes are summed into `stats` every 255 words, before one can overflow.
    fn count_run(&mut self, stats: &mut StrStats) {
        let rest = &self.bytes()[self.pos..];
        let mut len = 0;
        let (mut words, mut high, mut lead) = (0, 0u64, 0u64);
        for chunk in rest.chunks_exact(8) {
            let w = word(chunk);
            if (has_byte(w, b'"') | has_byte(w, b'\\')) != 0 {
                break;
            }
            // Most prompt text is ASCII, which only needs counting as whole words.
            let high_bits = w & HIGH_BITS;
            if high_bits != 0 {
                high += high_bits >> 7;
                lead += (w & (w << 1) & HIGH_BITS) >> 7;
            }
            len += 8;
            words += 1;
            if words == 255 {
                stats.add_words(words, high, lead);
                (words, high, lead) = (0, 0, 0);
            }
        }
        stats.add_words(words, high, lead);
        for &b in &rest[len..] {
            if b == b'"' || b == b'\\' {
                break;
            }
            if b < 0x80 {
                stats.ascii += 1;
            } else if b >= 0xc0 {
                stats.lead += 1;
            }
            len += 1;
        }
        self.pos += len;
    }

    /// Counts the character of the escape at `pos` (a backslash) and moves past it.
    fn escape(&mut self, stats: &mut StrStats) -> Option<()> {
        let kind = *self.bytes().get(self.pos + 1)?;
        if kind != b'u' {
            // `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`: one ASCII character.
            self.pos += 2;
            stats.ascii += 1;
            return Some(());
        }
        let code = self.hex_escape(self.pos)?;
        self.pos += 6;
        match code {
            // A leading surrogate counts once with its trailing one (one 4-byte character);
            // unpaired surrogates are an error in the visitor.
            0xd800..=0xdbff => {
                let next = self.hex_escape(self.pos)?;
                if !(0xdc00..=0xdfff).contains(&next) {
                    return None;
                }
                self.pos += 6;
                stats.lead += 1;
            }
            0xdc00..=0xdfff => return None,
            _ => stats.add_char(code),
        }
        Some(())
    }

    /// The code unit of a `\uXXXX` escape at `at`.
    fn hex_escape(&self, at: usize) -> Option<u32> {
        let escape = self.text.get(at..at + 6)?;
        let digits = escape.strip_prefix("\\u")?;
        u32::from_str_radix(digits, 16).ok()
    }
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
        Ok(string_tokens(v, self.image_data))
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

    /// The fast count must be the visitor's count (or its error) for every body.
    fn assert_same(body: &[u8]) {
        assert_eq!(
            count_tokens(body),
            count_with_serde(body),
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }

    #[test]
    fn fast_count_equals_visitor_on_fixtures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/claude-code");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("readable");
            let file: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let body = serde_json::to_vec(&file["body"]).expect("serializable");
            assert_same(&body);
            // ... and from the scan itself, not from the fallback.
            let raw: RawBody<'_> = serde_json::from_slice(&body).expect("parses");
            let scanned = estimate(raw.system, raw.messages, raw.tools);
            assert_eq!(scanned.map(Ok), Some(count_with_serde(&body)));
            // The same body pretty-printed: whitespace everywhere the scanner looks.
            assert_same(&serde_json::to_vec_pretty(&file["body"]).expect("serializable"));
            seen += 1;
        }
        assert!(seen >= 6, "{seen}");
    }

    #[test]
    fn fast_count_equals_visitor_on_edge_cases() {
        let base64 = "QUJD".repeat(100);
        let spaced = format!("{} {}", "A".repeat(100), "A".repeat(300));
        let late_space = format!("{} {}", "A".repeat(256), "A".repeat(10));
        let bodies: Vec<String> = vec![
            r#"{}"#.to_owned(),
            r#"{"messages":null,"tools":null,"system":null}"#.to_owned(),
            r#"{"messages":[],"tools":[]}"#.to_owned(),
            r#" { "system" : "s" , "messages" : [ { "role" : "user" , "content" : [ ] } ] } "#
                .to_owned(),
            r#"{"system":[{"type":"text","text":"a\"b\\c\/d\b\f\n\r\t","cache_control":{"type":"ephemeral"}}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"\u00e9\u65e5\u0041\ud83d\ude00 é日本語😀 \u0000"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"\ud83d"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"\ud83d\u0041"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"\ude00"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"\ud83dx"}]}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"ok"}],"tools":[{"input_schema":{"type":"\udc00"}}]}"#.to_owned(),
            r#"{"messages":[1,-2,3.5,-0.25,true,false,null,[],{},"",1e5,2E-3,1e999]}"#.to_owned(),
            r#"{"messages":[1e5]}"#.to_owned(),
            r#"{"messages":[1e999]}"#.to_owned(),
            format!(r#"{{"messages":[{}]}}"#, "9".repeat(400)),
            format!(r#"{{"messages":[{}]}}"#, "9".repeat(64)),
            format!(r#"{{"messages":[{}]}}"#, "9".repeat(65)),
            format!(r#"{{"messages":[{}1{}]}}"#, "[".repeat(99), "]".repeat(99)),
            format!(r#"{{"messages":[{}1{}]}}"#, "[".repeat(130), "]".repeat(130)),
            format!(r#"{{"messages":[{}1{}]}}"#, "{\"a\":".repeat(126), "}".repeat(126)),
            format!(r#"{{"messages":[{{"data":"{base64}"}},{{"data":"{spaced}"}},{{"data":"{late_space}"}}]}}"#),
            format!(r#"{{"messages":[{{"data":"\/{base64}"}},{{"data":"A\u0020{base64}"}},{{"data":"{}\n"}}]}}"#, "A".repeat(255)),
            format!(r#"{{"messages":[{{"data":{{"data":"{base64}"}}}},{{"data":["{base64}"]}},{{"d\u0061ta":"{base64}"}}]}}"#),
            r#"{"messages":[{"ty\u0070e":"xxxxxxxx","cache_\u0063ontrol":"y","k\"ey":"v","日本":"語"}]}"#.to_owned(),
            r#"{"messages":[{"type":{"deep":[1,2,"\ud800"]},"cache_control":1e999}]}"#.to_owned(),
            r#"{"messages":[{"a":1,"a":2}],"model":"\ud800","x":1e999}"#.to_owned(),
            r#"{"messages":[],"messages":[]}"#.to_owned(),
            r#"{"messages":"text"}"#.to_owned(),
            r#"{"messages":[{"role":"user"}],}"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"x\u001"}]}"#.to_owned(),
            "{\"messages\":[\"tab\there\"]}".to_owned(),
            r#"[1,2]"#.to_owned(),
            r#"{"messages":[{"role":"user","content":"x"}]} trailing"#.to_owned(),
            "".to_owned(),
        ];
        for body in &bodies {
            assert_same(body.as_bytes());
        }
        // Long non-ASCII runs: every byte lane of the word counters fills up many times over.
        for text in ["é", "日本語", "😀", "aé日😀"] {
            for repeat in [255, 1_000, 5_000] {
                let body = format!(r#"{{"messages":["{}x"]}}"#, text.repeat(repeat));
                assert_same(body.as_bytes());
            }
        }
        assert_eq!(
            count_tokens(format!(r#"{{"messages":["{}"]}}"#, "é".repeat(5_000)).as_bytes()),
            Ok(5_000 + PER_MESSAGE)
        );
        // Invalid UTF-8 inside and outside the counted values.
        assert_same(b"{\"messages\":[\"\xff\"]}");
        assert_same(b"{\"model\":\"\xff\",\"messages\":[\"a\"]}");
    }

    /// Random bodies from a small alphabet of JSON pieces, escapes and multi-byte text.
    #[test]
    fn fast_count_equals_visitor_on_random_bodies() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % n as u64).unwrap_or(0)
        };
        let pieces = [
            "a",
            "abcdefgh",
            " ",
            "é",
            "日本",
            "😀",
            "\\n",
            "\\\"",
            "\\\\",
            "\\/",
            "\\u00e9",
            "\\u0020",
            "\\ud83d\\ude00",
            "\\u65e5",
            "xyz0123456789",
            "\u{7f}",
            "\u{80}",
        ];
        for _ in 0..2_000 {
            let mut body = String::from(r#"{"system":"#);
            random_value(&mut body, &mut next, &pieces, 0);
            body.push_str(r#","messages":["#);
            for i in 0..next(4) {
                if i > 0 {
                    body.push(',');
                }
                random_value(&mut body, &mut next, &pieces, 0);
            }
            body.push_str("]}");
            assert_same(body.as_bytes());
        }
    }

    fn random_value(
        out: &mut String,
        next: &mut impl FnMut(usize) -> usize,
        pieces: &[&str],
        depth: usize,
    ) {
        let choice = if depth > 3 { next(4) } else { next(7) };
        match choice {
            0 => out.push_str(["1", "-2.5", "true", "null", "false", "0"][next(6)]),
            1..=3 => random_string(out, next, pieces),
            4 => {
                out.push('[');
                for i in 0..next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_value(out, next, pieces, depth + 1);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..next(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    match next(5) {
                        0 => out.push_str(r#""data""#),
                        1 => out.push_str(r#""type""#),
                        2 => out.push_str(r#""cache_control""#),
                        _ => random_string(out, next, pieces),
                    }
                    out.push(':');
                    random_value(out, next, pieces, depth + 1);
                }
                out.push('}');
            }
        }
    }

    fn random_string(out: &mut String, next: &mut impl FnMut(usize) -> usize, pieces: &[&str]) {
        out.push('"');
        // Sometimes long enough for the image rule, in base64-like runs.
        if next(4) == 0 {
            out.push_str(&"QUJD".repeat(next(100)));
        }
        for _ in 0..next(12) {
            out.push_str(pieces[next(pieces.len())]);
        }
        out.push('"');
    }
}
