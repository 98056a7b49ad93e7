//! Tool names and tool-call ids: the two identifiers that must survive a round trip through an
//! upstream with stricter rules than Anthropic's.
//!
//! - Names: OpenAI-compatible servers (and OpenAI itself) reject function names longer than 64
//!   characters, while MCP tools in Claude Code often exceed that. Long names are shortened
//!   deterministically (so turn N+1 shortens exactly like turn N, keeping the output append-only) and
//!   the map back lives in [`ToolNames`], carried by the request context to the response side.
//! - Ids: Anthropic requires tool-use ids to match `^[a-zA-Z0-9_-]+$`; some upstreams produce others
//!   (`call:0`, `functions.Bash:1`). Those are hex-encoded behind [`ENCODED_ID_PREFIX`]; the client
//!   echoes the encoded id in its next request and [`upstream_tool_id`] restores the original. No
//!   state is needed, so this works across processes and restarts.

use std::borrow::Cow;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Longest function name OpenAI-compatible upstreams accept.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// Bytes of the original name kept in front of the hash.
const SHORT_PREFIX_LEN: usize = 55;

/// Prefix of tool-use ids that carry a hex-encoded upstream id.
pub const ENCODED_ID_PREFIX: &str = "toolu_hex_";

/// Shortened tool names of one request and the originals they stand for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNames {
    /// Short name → original, only for names that needed shortening.
    originals: HashMap<String, String>,
}

impl ToolNames {
    /// The name to send upstream for `name`: itself when it fits, otherwise the shortened form
    /// (recorded so [`ToolNames::original`] can undo it).
    pub fn shorten<'n>(&mut self, name: &'n str) -> Cow<'n, str> {
        if name.len() <= MAX_TOOL_NAME_LEN {
            return Cow::Borrowed(name);
        }
        let short = short_name(name);
        self.originals
            .entry(short.clone())
            .or_insert_with(|| name.to_owned());
        Cow::Owned(short)
    }

    /// The client's name for an upstream tool name (unknown names come back unchanged).
    pub fn original<'n>(&'n self, upstream_name: &'n str) -> &'n str {
        self.originals
            .get(upstream_name)
            .map_or(upstream_name, String::as_str)
    }

    /// Whether any name was shortened.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }
}

/// `prefix_hash8`: the first 55 bytes (cut at a char boundary) and 8 hex digits of the SHA-256 of
/// the whole name, so two long names with the same prefix still differ.
fn short_name(name: &str) -> String {
    let mut cut = SHORT_PREFIX_LEN.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(name.as_bytes());
    format!("{}_{}", &name[..cut], hex::encode(&digest[..4]))
}

/// Whether `id` is a valid Anthropic tool-use id.
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The id to show the Anthropic client for an upstream tool-call id.
pub fn client_tool_id(upstream: &str) -> Cow<'_, str> {
    // Valid ids that happen to start with our prefix are encoded too, so decoding is unambiguous.
    if is_plain_id(upstream) && !upstream.starts_with(ENCODED_ID_PREFIX) {
        Cow::Borrowed(upstream)
    } else {
        Cow::Owned(format!(
            "{ENCODED_ID_PREFIX}{}",
            hex::encode(upstream.as_bytes())
        ))
    }
}

/// The id to send upstream for a tool-use id the client sent back (inverse of [`client_tool_id`]).
pub fn upstream_tool_id(client: &str) -> Cow<'_, str> {
    client
        .strip_prefix(ENCODED_ID_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .map_or(Cow::Borrowed(client), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_shorten_reversibly_and_deterministically() {
        let long = format!("mcp__server__{}", "x".repeat(80));
        let mut names = ToolNames::default();
        let short = names.shorten(&long).into_owned();
        assert!(short.len() <= MAX_TOOL_NAME_LEN);
        assert_eq!(names.original(&short), long);
        assert_eq!(ToolNames::default().shorten(&long), short);
        assert_eq!(names.shorten("Bash"), "Bash");
        assert_eq!(names.original("Bash"), "Bash");
        let other = format!("mcp__server__{}y", "x".repeat(80));
        assert_ne!(names.shorten(&other), short);
        // Multi-byte characters at the cut point.
        let wide = "é".repeat(40);
        assert!(names.shorten(&wide).len() <= MAX_TOOL_NAME_LEN);
    }

    #[test]
    fn ids_round_trip() {
        for id in [
            "call_abc-1",
            "call:0",
            "functions.Bash:1",
            "toolu_hex_41",
            "ü",
        ] {
            let client = client_tool_id(id);
            assert!(is_plain_id(&client), "{client}");
            assert_eq!(upstream_tool_id(&client), id);
        }
        assert_eq!(client_tool_id("call_abc"), "call_abc");
    }
}
