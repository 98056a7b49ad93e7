//! Input generators every fuzz target shares: text with the characters that break things (quotes,
//! backslashes, control characters, multi-byte and astral characters, line separators), JSON
//! literals of every type (odd numbers and escapes included), objects whose fields are sometimes
//! missing, mistyped, reordered or duplicated, mutations of real recorded bodies, raw bytes, and
//! the points where a byte stream is cut into reads.
//!
//! Everything is produced as *text* rather than as `serde_json::Value`: a `Value` cannot hold a
//! lone surrogate escape, `1e999`, a duplicate key or a 70-digit integer, and those are exactly the
//! inputs a parser has to survive.

use std::fmt;
use std::ops::Range;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde::de::IgnoredAny;
use serde_json::Value;

/// A member of a generated JSON object: the key's literal and the value's text.
pub(crate) type Member = (String, String);

/// A strategy for one optional object member (`None`: the key is absent).
pub(crate) type MemberStrategy = BoxedStrategy<Option<Member>>;

/// Bytes shown as text in failure reports (escaped where they are not UTF-8).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Shown(pub(crate) Vec<u8>);

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "{text:?}"),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

/// Pieces text is made of: words, the characters JSON and SSE treat specially, multi-byte and
/// astral characters, and prefixes relayd itself looks for.
const TEXT_PIECES: &[&str] = &[
    "a",
    "hello world",
    " ",
    "\"",
    "\\",
    "/",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\u{0}",
    "\u{8}",
    "\u{1f}",
    "\u{7f}",
    "\u{80}",
    "é",
    "日本語",
    "😀",
    "\u{2028}",
    "\u{fffd}",
    "\u{10ffff}",
    "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli;",
    "toolu_hex_",
    "call_0",
    "data: ",
    "[DONE]",
    "{\"a\":",
    "}",
    "]",
    "<think>",
    "%s%n",
    "0",
];

/// Escapes that are valid, and some that are not, for hand-made string literals.
const ESCAPE_PIECES: &[&str] = &[
    "abc",
    "é",
    "\\u00e9",
    "\\u0041",
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\\"",
    "\\\\",
    "\\ud83d\\ude00",
    "\\u0000",
    "\\u2028",
    // Invalid from here on: lone surrogates, bad escapes, raw control characters.
    "\\ud800",
    "\\udfff",
    "\\ud83d\\u0041",
    "\\x41",
    "\\u12",
    "\u{1}",
    "\n",
];

/// Number literals at the edges: signed zero, exponents, out of `f64` range, past `u64` and `u32`,
/// longer than 64 digits.
const ODD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    "1e5",
    "1E-3",
    "2.5e+3",
    "1e999",
    "-1e999",
    "1.7976931348623157e308",
    "5e-324",
    "4294967295",
    "4294967296",
    "2147483648",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "100000000000000000000000000000000000000",
    "123456789012345678901234567890123456789012345678901234567890123456789",
    "0.000000000000000000000000000000000000000000000001",
];

/// Keys any of the parsers reads, for random objects and renamed keys.
const KEYS: &[&str] = &[
    "type",
    "text",
    "role",
    "content",
    "model",
    "messages",
    "system",
    "tools",
    "name",
    "id",
    "input",
    "tool_use_id",
    "is_error",
    "source",
    "data",
    "media_type",
    "url",
    "thinking",
    "signature",
    "cache_control",
    "input_schema",
    "description",
    "tool_choice",
    "max_tokens",
    "stream",
    "metadata",
    "user_id",
    "choices",
    "delta",
    "message",
    "tool_calls",
    "function",
    "arguments",
    "index",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "error",
    "endpoint",
    "deploymentName",
    "",
];

/// A JSON string literal for `text`, escaped as serde_json escapes.
pub(crate) fn lit(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Decoded text: pieces, arbitrary characters, or one piece repeated into a long run.
pub(crate) fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::collection::vec(select(TEXT_PIECES), 0..6).prop_map(|p| p.concat()),
        2 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
        // Long runs reach the word-at-a-time paths of the escaper and the token scanner.
        1 => (select(TEXT_PIECES), prop_oneof![6 => 1..64usize, 1 => 64..3_000usize])
            .prop_map(|(p, n)| p.repeat(n)),
    ]
    .boxed()
}

/// Text from a fixed list (names the code compares against), or any text.
pub(crate) fn text_or(known: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(known).prop_map(str::to_owned),
        1 => text(),
    ]
    .boxed()
}

/// A string literal: usually properly escaped text, sometimes hand-made escapes (some invalid).
pub(crate) fn str_lit() -> BoxedStrategy<String> {
    prop_oneof![
        9 => text().prop_map(|t| lit(&t)),
        1 => prop::collection::vec(select(ESCAPE_PIECES), 0..5)
            .prop_map(|p| format!("\"{}\"", p.concat())),
    ]
    .boxed()
}

/// A string literal of one of `known`, or any string literal.
pub(crate) fn str_lit_or(known: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(known).prop_map(lit),
        1 => str_lit(),
    ]
    .boxed()
}

/// A number literal: an edge case or any integer or float.
pub(crate) fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(ODD_NUMBERS).prop_map(str::to_owned),
        3 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| if n.is_finite() { format!("{n:?}") } else { "0.5".to_owned() }),
    ]
    .boxed()
}

/// `true` or `false`.
pub(crate) fn boolean() -> BoxedStrategy<String> {
    select(&["true", "false"][..])
        .prop_map(str::to_owned)
        .boxed()
}

/// Any scalar literal.
pub(crate) fn scalar() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just("null".to_owned()),
        1 => boolean(),
        2 => number(),
        3 => str_lit(),
    ]
    .boxed()
}

/// An object key literal.
pub(crate) fn key() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(KEYS).prop_map(lit),
        1 => str_lit(),
    ]
    .boxed()
}

/// Values nested up to `levels` deep: at each level `leaf` or, one time in `1 + leaf_weight`,
/// `branch` of the level below. Built once, unlike proptest's `prop_recursive`, which builds its
/// strategies again for every case (that cost more than running the properties).
pub(crate) fn nested(
    leaf: &BoxedStrategy<String>,
    leaf_weight: u32,
    levels: usize,
    branch: impl Fn(BoxedStrategy<String>) -> BoxedStrategy<String>,
) -> BoxedStrategy<String> {
    let mut level = leaf.clone();
    for _ in 0..levels {
        level = prop_oneof![leaf_weight => leaf.clone(), 1 => branch(level)].boxed();
    }
    level
}

/// Any JSON value up to a few levels deep, or a deeply nested one.
pub(crate) fn any_json() -> BoxedStrategy<String> {
    let shallow = nested(&scalar(), 1, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|items| array_text(&items)),
            prop::collection::vec((key(), inner), 0..5).prop_map(|members| {
                object_text(members.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }),
        ]
        .boxed()
    });
    prop_oneof![
        24 => shallow,
        1 => deep(),
    ]
    .boxed()
}

/// A value of any type, for fields that expect another: the type confusion every field gets.
pub(crate) fn odd() -> BoxedStrategy<String> {
    any_json()
}

/// Nesting around serde_json's recursion limit (128) and, rarely, far beyond it.
pub(crate) fn deep() -> BoxedStrategy<String> {
    let openers = select(
        &[
            ("[", "]"),
            ("{\"a\":", "}"),
            ("{\"content\":[", "]}"),
            ("[{\"type\":\"text\",\"text\":", "}]"),
        ][..],
    );
    let depth = prop_oneof![
        20 => 100..140usize,
        1 => 140..20_000usize,
    ];
    (openers, depth, scalar())
        .prop_map(|((open, close), depth, leaf)| {
            let mut out = String::with_capacity(depth * (open.len() + close.len()) + leaf.len());
            for _ in 0..depth {
                out.push_str(open);
            }
            out.push_str(&leaf);
            for _ in 0..depth {
                out.push_str(close);
            }
            out
        })
        .boxed()
}

/// `[a,b,…]`
pub(crate) fn array_text(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

/// `{k:v,…}`
pub(crate) fn object_text<'a>(members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in members.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// An array of 0 to `max - 1` items.
pub(crate) fn array(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(item, 0..max)
        .prop_map(|items| array_text(&items))
        .boxed()
}

/// A member that is usually there with a good value, sometimes with a value of another type, and
/// sometimes absent.
pub(crate) fn member(key: &'static str, good: BoxedStrategy<String>) -> MemberStrategy {
    prop_oneof![
        12 => good.prop_map(move |v| Some((lit(key), v))),
        1 => odd().prop_map(move |v| Some((lit(key), v))),
        2 => Just(None),
    ]
    .boxed()
}

/// A member the parser needs: rarely absent or mistyped.
pub(crate) fn required(key: &'static str, good: BoxedStrategy<String>) -> MemberStrategy {
    prop_oneof![
        40 => good.prop_map(move |v| Some((lit(key), v))),
        1 => odd().prop_map(move |v| Some((lit(key), v))),
        1 => Just(None),
    ]
    .boxed()
}

/// A member that is always there with exactly this value (a block's `type`, say).
pub(crate) fn fixed(key: &'static str, value: &'static str) -> MemberStrategy {
    Just(Some((lit(key), lit(value)))).boxed()
}

/// How an object's members are disturbed beyond what each member does on its own.
#[derive(Debug, Clone)]
enum Disturbance {
    None,
    /// Two members swap places (parsers must not depend on key order).
    Swap(Index, Index),
    /// One member appears twice (serde rejects duplicate fields it knows).
    Duplicate(Index),
    /// An unknown key is added.
    Extra(Member),
}

/// An object with the given members, sometimes reordered, with a duplicate or an extra key.
pub(crate) fn object(members: Vec<MemberStrategy>) -> BoxedStrategy<String> {
    let disturbance = prop_oneof![
        12 => Just(Disturbance::None),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Disturbance::Swap(a, b)),
        1 => any::<Index>().prop_map(Disturbance::Duplicate),
        1 => (key(), scalar()).prop_map(Disturbance::Extra),
    ];
    (members, disturbance)
        .prop_map(|(members, disturbance)| {
            let mut members: Vec<Member> = members.into_iter().flatten().collect();
            match disturbance {
                Disturbance::None => {}
                Disturbance::Swap(_, _) | Disturbance::Duplicate(_) if members.is_empty() => {}
                Disturbance::Swap(a, b) => {
                    let (a, b) = (a.index(members.len()), b.index(members.len()));
                    members.swap(a, b);
                }
                Disturbance::Duplicate(i) => {
                    let copy = members[i.index(members.len())].clone();
                    members.push(copy);
                }
                Disturbance::Extra(extra) => members.push(extra),
            }
            object_text(members.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        })
        .boxed()
}

/// A recorded JSON document written compactly, with the byte range of every value and every key,
/// so that mutations can replace a subtree without re-serializing the document.
#[derive(Debug)]
pub(crate) struct Spliceable {
    text: Vec<u8>,
    /// Every value, as (depth, range).
    values: Vec<(usize, Range<usize>)>,
    /// Values at most [`SHALLOW`] levels deep: where the fields a translator reads are (the
    /// deeper ones are mostly JSON schemas it copies verbatim).
    shallow: Vec<Range<usize>>,
    keys: Vec<Range<usize>>,
}

/// See [`Spliceable::shallow`].
const SHALLOW: usize = 6;

impl Spliceable {
    /// Indexes `value`.
    pub(crate) fn new(value: &Value) -> Self {
        let mut s = Self {
            text: Vec::new(),
            values: Vec::new(),
            shallow: Vec::new(),
            keys: Vec::new(),
        };
        s.write(value, 0);
        s.shallow = s
            .values
            .iter()
            .filter(|(depth, _)| *depth <= SHALLOW)
            .map(|(_, range)| range.clone())
            .collect();
        s
    }

    /// Parses and indexes a JSON text (a fixture compiled into the bench).
    pub(crate) fn parse(text: &str) -> Self {
        let value: Value = serde_json::from_str(text).expect("fixtures are JSON");
        Self::new(&value)
    }

    fn write(&mut self, value: &Value, depth: usize) {
        let start = self.text.len();
        match value {
            Value::Array(items) => {
                self.text.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    self.write(item, depth + 1);
                }
                self.text.push(b']');
            }
            Value::Object(map) => {
                self.text.push(b'{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        self.text.push(b',');
                    }
                    let key_start = self.text.len();
                    self.text.extend_from_slice(lit(k).as_bytes());
                    self.keys.push(key_start..self.text.len());
                    self.text.push(b':');
                    self.write(v, depth + 1);
                }
                self.text.push(b'}');
            }
            leaf => {
                let text = serde_json::to_vec(leaf).expect("a JSON leaf serializes");
                self.text.extend_from_slice(&text);
            }
        }
        self.values.push((depth, start..self.text.len()));
    }
}

/// One subtree replacement.
#[derive(Debug, Clone)]
pub(crate) struct Splice {
    /// Which value or key.
    at: Index,
    /// A key (renamed, which also removes the old key) rather than a value.
    key: bool,
    /// Among the shallow values only.
    shallow: bool,
    /// The new value's text (used for values).
    value: String,
    /// The new key's literal (used for keys).
    key_text: String,
}

/// A byte-level edit after the splices.
#[derive(Debug, Clone)]
pub(crate) enum Noise {
    Delete(Index),
    Insert(Index, u8),
    Flip(Index, u8),
    Truncate(Index),
}

/// Bytes that keep a mutated document close to JSON.
const JSON_BYTES: &[u8] = b"{}[]\":,0123456789.-+eE tfnrul\\ abc\n\t\r\xc3\xa9\xff";

/// A real document with up to three subtrees replaced (values by `replacement`, keys by other
/// keys), and sometimes a few bytes edited.
pub(crate) fn mutated(
    documents: &'static [(u32, Spliceable)],
    replacement: BoxedStrategy<String>,
) -> BoxedStrategy<Vec<u8>> {
    let weights: Vec<(u32, BoxedStrategy<&'static Spliceable>)> = documents
        .iter()
        .map(|(weight, doc)| (*weight, Just(doc).boxed()))
        .collect();
    let document = prop::strategy::Union::new_weighted(weights);
    let splice = (
        any::<Index>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.6),
        replacement,
        key(),
    )
        .prop_map(|(at, key, shallow, value, key_text)| Splice {
            at,
            key,
            shallow,
            value,
            key_text,
        });
    let noise = prop_oneof![
        any::<Index>().prop_map(Noise::Delete),
        (any::<Index>(), select(JSON_BYTES)).prop_map(|(i, b)| Noise::Insert(i, b)),
        (any::<Index>(), 1..=255u8).prop_map(|(i, b)| Noise::Flip(i, b)),
        any::<Index>().prop_map(Noise::Truncate),
    ];
    let noise = prop_oneof![
        6 => Just(Vec::new()),
        1 => prop::collection::vec(noise, 1..4),
    ];
    (document, prop::collection::vec(splice, 0..4), noise)
        .prop_map(|(doc, splices, noise)| apply(doc, &splices, &noise))
        .boxed()
}

/// `doc` with `splices` (those that do not overlap an earlier one) and then `noise` applied.
fn apply(doc: &Spliceable, splices: &[Splice], noise: &[Noise]) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, &str)> = Vec::new();
    for splice in splices {
        let (range, text) = if splice.key {
            if doc.keys.is_empty() {
                continue;
            }
            (
                doc.keys[splice.at.index(doc.keys.len())].clone(),
                &splice.key_text,
            )
        } else if splice.shallow && !doc.shallow.is_empty() {
            (
                doc.shallow[splice.at.index(doc.shallow.len())].clone(),
                &splice.value,
            )
        } else {
            (
                doc.values[splice.at.index(doc.values.len())].1.clone(),
                &splice.value,
            )
        };
        if edits
            .iter()
            .all(|(r, _)| r.end <= range.start || range.end <= r.start)
        {
            edits.push((range, text));
        }
    }
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(doc.text.len() + 256);
    let mut pos = 0;
    for (range, text) in edits {
        out.extend_from_slice(&doc.text[pos..range.start]);
        out.extend_from_slice(text.as_bytes());
        pos = range.end;
    }
    out.extend_from_slice(&doc.text[pos..]);
    for op in noise {
        match *op {
            Noise::Delete(i) if !out.is_empty() => {
                out.remove(i.index(out.len()));
            }
            Noise::Insert(i, b) => out.insert(i.index(out.len() + 1), b),
            Noise::Flip(i, b) if !out.is_empty() => {
                let at = i.index(out.len());
                out[at] ^= b;
            }
            Noise::Truncate(i) => out.truncate(i.index(out.len() + 1)),
            Noise::Delete(_) | Noise::Flip(_, _) => {}
        }
    }
    out
}

/// Raw bytes: anything, or bytes from the JSON alphabet (which get further into a parser).
pub(crate) fn raw_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        prop::collection::vec(select(JSON_BYTES), 0..160),
    ]
    .boxed()
}

/// Where a byte stream is cut into reads.
#[derive(Debug, Clone)]
pub(crate) enum Splits {
    /// At these points (scaled to the stream's length).
    At(Vec<Index>),
    /// Every `n` bytes.
    Every(usize),
}

/// Split points: a few anywhere, a fixed small read size, or one byte at a time.
pub(crate) fn splits() -> BoxedStrategy<Splits> {
    prop_oneof![
        6 => prop::collection::vec(any::<Index>(), 1..16).prop_map(Splits::At),
        2 => (2..32usize).prop_map(Splits::Every),
        1 => Just(Splits::Every(1)),
    ]
    .boxed()
}

/// `bytes` cut into reads as `splits` says (empty reads included where two cuts coincide).
pub(crate) fn pieces<'a>(bytes: &'a [u8], splits: &Splits) -> Vec<&'a [u8]> {
    match splits {
        Splits::Every(n) => bytes.chunks((*n).max(1)).collect(),
        Splits::At(points) => {
            let mut cuts: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut out = Vec::with_capacity(cuts.len() + 1);
            let mut start = 0;
            for cut in cuts {
                out.push(&bytes[start..cut]);
                start = cut;
            }
            out.push(&bytes[start..]);
            out
        }
    }
}

/// Parses a translator's output: `Ok(None)` when it is JSON by the grammar but holds what
/// serde_json will not decode: a lone surrogate escape, a number beyond `f64`, nesting beyond
/// serde_json's limit of 128. The translators copy schemas, tool inputs and unknown fields as the
/// client or the upstream wrote them, and JSON's grammar allows all three, so then only the
/// syntax can be checked.
pub(crate) fn parse_output(out: &[u8]) -> Result<Option<Value>, String> {
    serde_json::from_slice::<IgnoredAny>(out).map_err(|e| format!("output is not JSON: {e}"))?;
    match serde_json::from_slice(out) {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            let message = e.to_string();
            let grammatical = [
                "surrogate",
                "hex escape",
                "number out of range",
                "recursion limit",
            ]
            .iter()
            .any(|m| message.contains(m));
            if grammatical {
                Ok(None)
            } else {
                Err(format!("output is not readable JSON: {e}"))
            }
        }
    }
}
