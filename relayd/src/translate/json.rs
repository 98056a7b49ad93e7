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
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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

/// Non-zero when some byte of `w` is `b` (the classic "has zero byte" test on `w ^ b…b`).
pub(crate) fn has_byte(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW_BITS * u64::from(b));
    x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS
}

/// Appends a number.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Parses a sub-document of a request, naming `path` on failure (a client error).
pub(crate) fn parse_request<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    path: Path<'_>,
) -> Result<T, TranslateError> {
    serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::request(path, describe_json_error(&e)))
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
