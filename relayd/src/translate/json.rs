//! Small JSON writing and parsing helpers shared by the translators.
//!
//! Output is written by hand into a `Vec<u8>` rather than through `serde_json::Value`: it fixes the
//! key order (the upstream prefix cache needs byte-stable output), lets `RawValue` subtrees be copied
//! without re-serializing, and avoids an allocation per node. Error paths ([`Path`]) are only
//! formatted when an error is returned.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{TranslateError, describe_json_error};

/// Where a value sits in the request, e.g. `messages[3].content[0]`, for error messages.
///
/// A chain of borrowed segments that is only formatted when an error is actually returned: the
/// happy path of a request visits hundreds of values and would otherwise format a path for each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'p> {
    /// A top-level key (or `body`).
    Root(&'static str),
    /// `parent.key`
    Key(&'p Path<'p>, &'static str),
    /// `parent[index]`
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    /// `self.key`
    pub(crate) fn key(&'p self, key: &'static str) -> Self {
        Path::Key(self, key)
    }

    /// `self[index]`
    pub(crate) fn index(&'p self, index: usize) -> Self {
        Path::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

impl From<Path<'_>> for String {
    fn from(path: Path<'_>) -> Self {
        path.to_string()
    }
}

/// Appends `s` as a JSON string literal. Escapes exactly what serde_json escapes (`"`, `\`, and
/// control characters), so output is identical to `serde_json::to_writer` for the same text.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// Appends several pieces as one JSON string literal.
pub(crate) fn push_str_parts(out: &mut Vec<u8>, parts: &[&str]) {
    out.push(b'"');
    for part in parts {
        push_escaped(out, part);
    }
    out.push(b'"');
}

/// Appends the escaped body of a JSON string (no quotes).
pub(crate) fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let end = start + clean_len(&bytes[start..]);
        out.extend_from_slice(&bytes[start..end]);
        let Some(&b) = bytes.get(end) else { return };
        match ESCAPE[usize::from(b)] {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            short => out.extend_from_slice(&[b'\\', short]),
        }
        start = end + 1;
    }
}

/// Length of the prefix of `bytes` that needs no escaping.
///
/// Prompts are long runs of plain text between a few escapes, so whole 8-byte words are tested at
/// once; only the word holding a `"`, `\` or control byte is searched byte by byte.
fn clean_len(bytes: &[u8]) -> usize {
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let w = word(chunk);
        if (has_byte_below_0x20(w) | has_byte(w, b'"') | has_byte(w, b'\\')) != 0 {
            break;
        }
        clean += 8;
    }
    let rest = &bytes[clean..];
    clean
        + rest
            .iter()
            .position(|&b| ESCAPE[usize::from(b)] != 0)
            .unwrap_or(rest.len())
}

/// How serde_json escapes each byte: 0 for not at all, `u` for `\u00XX`, otherwise the letter
/// after the backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as a JSON string of lowercase hex digits (what `hex::encode` gives).
pub(crate) fn push_hex_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

/// `0x0101…01`: one in every byte of a word.
const LOW_BITS: u64 = u64::MAX / 255;
/// `0x8080…80`: the high bit of every byte of a word.
pub(crate) const HIGH_BITS: u64 = LOW_BITS << 7;

/// Eight bytes as one little-endian word (the first byte is the lowest).
pub(crate) fn word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_le_bytes(bytes)
}

/// Non-zero when some byte of `w` is a control character (below 0x20).
fn has_byte_below_0x20(w: u64) -> u64 {
    w.wrapping_sub(LOW_BITS * 0x20) & !w & HIGH_BITS
}

/// Non-zero when some byte of `w` is `b` (the classic "has zero byte" test on `w ^ b…b`).
pub(crate) fn has_byte(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW_BITS * u64::from(b));
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS
}

/// Appends a number (`itoa`: no `String` and no formatting machinery per number).
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Parses a sub-document of a request, naming `path` on failure (a client error).
pub(crate) fn parse_request<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    path: Path<'_>,
) -> Result<T, TranslateError> {
    serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::request(path, describe_json_error(&e)))
}

/// The elements of a request array, deserialized in one pass over the array when they all
/// deserialize. Otherwise each element is parsed on its own when [`Items::next`] reaches it,
/// exactly as if there had been no first pass: its error names the element, and errors the caller
/// finds in earlier elements come first.
#[derive(Debug)]
pub(crate) enum Items<'a, T> {
    Parsed(std::vec::IntoIter<T>),
    Raw(std::vec::IntoIter<&'a RawValue>),
}

impl<'a, T: Deserialize<'a>> Items<'a, T> {
    /// Parses `raw` (the array at `path`).
    pub(crate) fn parse(raw: &'a RawValue, path: Path<'_>) -> Result<Self, TranslateError> {
        // Inside the array an element is one level deeper than on its own, so the one pass never
        // accepts what the element-by-element parse would reject.
        match serde_json::from_str::<Vec<T>>(raw.get()) {
            Ok(items) => Ok(Items::Parsed(items.into_iter())),
            Err(_) => Ok(Items::Raw(
                parse_request::<Vec<&RawValue>>(raw, path)?.into_iter(),
            )),
        }
    }

    /// The number of elements not yet taken.
    pub(crate) fn len(&self) -> usize {
        match self {
            Items::Parsed(items) => items.len(),
            Items::Raw(items) => items.len(),
        }
    }

    /// The next element, at `path` (which is only formatted for an error).
    pub(crate) fn next(&mut self, path: Path<'_>) -> Option<Result<T, TranslateError>> {
        match self {
            Items::Parsed(items) => items.next().map(Ok),
            Items::Raw(items) => items.next().map(|raw| parse_request(raw, path)),
        }
    }
}

/// Parses an optional sub-document of a request.
pub(crate) fn parse_opt<'a, T: Deserialize<'a>>(
    raw: Option<&'a RawValue>,
    path: Path<'_>,
) -> Result<Option<T>, TranslateError> {
    raw.map(|r| parse_request(r, path)).transpose()
}

/// Whether a raw JSON value is a string literal.
pub(crate) fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

/// Whether a raw JSON value is an object.
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time escaper the fast path replaced: the reference for its output.
    fn reference(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in s.as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                0x00..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => out.push(b),
            }
        }
        out
    }

    #[test]
    fn escapes_like_serde_json_at_every_offset() {
        // Every ASCII byte (and some non-ASCII) at every position of a word, and at word ends.
        let specials: Vec<String> = (0u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain(["é", "日", "😀", "\u{7f}", "\u{2028}"].map(str::to_owned))
            .collect();
        for special in &specials {
            for before in 0..18 {
                for after in [0, 1, 7, 8, 9] {
                    let s = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    let mut out = Vec::new();
                    push_escaped(&mut out, &s);
                    assert_eq!(out, reference(&s), "{s:?}");
                    assert_eq!(
                        serde_json::to_vec(&s).ok(),
                        Some([b"\"".as_slice(), &out, b"\""].concat())
                    );
                }
            }
        }
        let all: String = (0u8..0x80).map(char::from).collect::<String>().repeat(3);
        let mut out = Vec::new();
        push_escaped(&mut out, &all);
        assert_eq!(out, reference(&all));
    }

    #[test]
    fn hex_strings_match_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        push_hex_str(&mut out, &bytes);
        assert_eq!(out, format!("\"{}\"", hex::encode(&bytes)).into_bytes());
    }

    #[test]
    fn numbers_are_written_like_to_string() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
