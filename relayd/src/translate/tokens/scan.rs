//! The fast path of the token estimate: a byte scan over raw JSON that serde has already
//! accepted, 8 bytes of string at a time, giving exactly the count of the visitor in
//! [`super::visit`] or `None` when only serde may judge the input.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::super::json::{HIGH_BITS, has_byte, word};
use super::{Key, PER_OBJECT, string_tokens};

/// Deepest nesting the scanner follows inside one value. The visitor is limited to 128 levels
/// counting `body` and `messages` above the value, so anything near that is left to serde.
const MAX_DEPTH: usize = 100;

/// Longest number the scanner accepts: longer ones (and exponents) may be out of `f64`'s range,
/// which the visitor reports as an error.
const MAX_NUMBER_LEN: usize = 64;

/// A scanner at the start of `raw`.
pub(super) fn scanner(raw: &RawValue) -> Scanner<'_> {
    Scanner {
        text: raw.get(),
        pos: 0,
    }
}

/// A byte scanner over JSON that a serde parse has already accepted, computing exactly what the
/// visitor in [`super::visit`] computes.
///
/// serde skipped the raw value without judging everything the visitor will: surrogate escapes must
/// pair up, numbers must fit an `f64`, nesting must stay under the recursion limit. The scanner
/// returns `None` on any of these (and on anything unexpected), never a different number. Rare
/// cases that need the decoded text (escaped keys, escaped image data) are decoded by serde.
pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

/// ASCII bytes and UTF-8 leading bytes of a string, as [`super::text_tokens`] counts them.
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

    pub(super) fn value(&mut self, image_data: bool, depth: usize) -> Option<u64> {
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
    pub(super) fn list(&mut self, per_item: u64) -> Option<u64> {
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
