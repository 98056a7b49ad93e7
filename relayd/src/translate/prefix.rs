//! The stable prefix of a conversation, hashed: what stays the same from one turn to the next
//! and opens the prompt an upstream's cache holds — the system prompt, the tools and the
//! conversation's first user message. Routing keeps requests with the same hash on the same
//! account when the client sends no session id (see `crate::coordinator::affinity`).
//!
//! Only the texts of messages count, not their JSON: clients move `cache_control` markers from
//! turn to turn (Claude Code puts one on the last message, which on turn 1 is the first). Claude
//! Code's `x-anthropic-billing-header:` system line changes on every request and is left out, as
//! the translation leaves it out of what upstreams see. Only the leading elements of `messages`
//! are parsed; the rest of a long conversation is not read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::Xxh3Default;

use super::request::strip_billing_lines;

/// Separates the parts hashed, so text moving from one part to the next changes the hash.
const SEPARATOR: &[u8] = &[0xff];

/// An Anthropic request's prefix hash from its raw `system`, `tools` and `messages`; `None`
/// without a first message.
pub fn anthropic(
    system: Option<&RawValue>,
    tools: Option<&RawValue>,
    messages: Option<&RawValue>,
) -> Option<u128> {
    let first = leading_items(messages?).next()?;
    let mut hasher = Xxh3Default::new();
    if let Some(system) = system {
        hash_content(&mut hasher, system, true);
    }
    hasher.update(SEPARATOR);
    if let Some(tools) = tools {
        hasher.update(tools.get().as_bytes());
    }
    hasher.update(SEPARATOR);
    hash_turn(&mut hasher, first);
    Some(hasher.digest128())
}

/// An OpenAI Chat Completions body's prefix hash: its `tools`, and its messages up to and with
/// the first user message; `None` when the body has no messages.
pub fn openai(body: &[u8]) -> Option<u128> {
    #[derive(Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        messages: Option<&'a RawValue>,
        #[serde(borrow)]
        tools: Option<&'a RawValue>,
    }
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    let mut hasher = Xxh3Default::new();
    if let Some(tools) = top.tools {
        hasher.update(tools.get().as_bytes());
    }
    let mut any = false;
    for raw in leading_items(top.messages?) {
        any = true;
        hasher.update(SEPARATOR);
        if hash_turn(&mut hasher, raw) == Some("user") {
            break;
        }
    }
    any.then(|| hasher.digest128())
}

/// One message: its role and the texts of its content. Returns the role.
fn hash_turn<'a>(hasher: &mut Xxh3Default, raw: &'a RawValue) -> Option<&'a str> {
    #[derive(Deserialize)]
    struct Turn<'a> {
        #[serde(borrow)]
        role: Option<&'a str>,
        #[serde(borrow)]
        content: Option<&'a RawValue>,
    }
    let Ok(turn) = serde_json::from_str::<Turn<'a>>(raw.get()) else {
        hasher.update(raw.get().as_bytes());
        return None;
    };
    hasher.update(turn.role.unwrap_or_default().as_bytes());
    hasher.update(SEPARATOR);
    if let Some(content) = turn.content {
        hash_content(hasher, content, false);
    }
    turn.role
}

/// A content value: a string, or blocks whose texts count; anything else as it is written.
fn hash_content(hasher: &mut Xxh3Default, content: &RawValue, system: bool) {
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
    }
    let text = |hasher: &mut Xxh3Default, text: Cow<'_, str>| {
        let text = if system {
            strip_billing_lines(text)
        } else {
            text
        };
        if !text.is_empty() {
            hasher.update(text.as_bytes());
            hasher.update(SEPARATOR);
        }
    };
    if let Ok(whole) = serde_json::from_str::<Cow<'_, str>>(content.get()) {
        text(hasher, whole);
        return;
    }
    if content.get().trim_start().starts_with('[') {
        for raw in leading_items(content) {
            match serde_json::from_str::<Block<'_>>(raw.get()) {
                Ok(Block { text: Some(t) }) => text(hasher, t),
                // Images, tool results: as written (they rarely open a conversation).
                _ => hasher.update(raw.get().as_bytes()),
            }
        }
        return;
    }
    hasher.update(content.get().as_bytes());
}

/// The elements of a JSON array, each parsed when reached, so a caller that stops early never
/// reads the rest. Ends at the array's end or at the first malformed element; yields nothing
/// for a value that is not an array.
fn leading_items(array: &RawValue) -> impl Iterator<Item = &RawValue> {
    let text = array.get().trim_start();
    let mut rest = text.strip_prefix('[').unwrap_or("]");
    std::iter::from_fn(move || {
        let item = rest.trim_start();
        if item.starts_with(']') || item.is_empty() {
            return None;
        }
        let mut stream = serde_json::Deserializer::from_str(item).into_iter::<&RawValue>();
        let value = stream.next()?.ok()?;
        let after = item[stream.byte_offset()..].trim_start();
        // Anything but a comma ends the walk: the array's end, or malformed text.
        rest = after.strip_prefix(',').unwrap_or("]");
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn leading_items_walks_an_array_lazily() {
        let items: Vec<&str> = leading_items(raw(r#" [ 1 , {"a":[2,3]} ,"x" ] "#))
            .map(RawValue::get)
            .collect();
        assert_eq!(items, ["1", r#"{"a":[2,3]}"#, r#""x""#]);
        assert_eq!(leading_items(raw("[]")).count(), 0);
        assert_eq!(leading_items(raw(r#"{"a":1}"#)).count(), 0);
        assert_eq!(leading_items(raw(r#""[1]""#)).count(), 0);
    }

    fn anthropic_hash(system: &str, tools: &str, messages: &str) -> Option<u128> {
        anthropic(Some(raw(system)), Some(raw(tools)), Some(raw(messages)))
    }

    #[test]
    fn anthropic_prefix_ignores_later_turns_cache_markers_and_the_billing_line() {
        let tools = r#"[{"name":"Read","input_schema":{"type":"object"}}]"#;
        let turn1 = r#"[{"role":"user","content":[{"type":"text","text":"fix the bug","cache_control":{"type":"ephemeral"}}]}]"#;
        let turn2 = r#"[{"role":"user","content":[{"type":"text","text":"fix the bug"}]},
            {"role":"assistant","content":"done"},{"role":"user","content":"thanks"}]"#;
        let system1 = r#"[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.1; cch=aaaa;"},{"type":"text","text":"You are Claude Code."}]"#;
        let system2 = r#"[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.1; cch=bbbb;"},{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}]"#;
        let a = anthropic_hash(system1, tools, turn1).unwrap();
        assert_eq!(a, anthropic_hash(system2, tools, turn2).unwrap());
        // The same text as a plain string is the same prefix.
        let plain = r#"[{"role":"user","content":"fix the bug"}]"#;
        assert_eq!(a, anthropic_hash(system1, tools, plain).unwrap());
        // A different first message, system prompt or tool set is another conversation.
        let other = r#"[{"role":"user","content":"write tests"}]"#;
        assert_ne!(a, anthropic_hash(system1, tools, other).unwrap());
        assert_ne!(
            a,
            anthropic_hash(r#""You are a poet.""#, tools, turn1).unwrap()
        );
        assert_ne!(a, anthropic_hash(system1, "[]", turn1).unwrap());
        assert_eq!(anthropic_hash(system1, tools, "[]"), None);
        assert_eq!(anthropic(None, None, None), None);
    }

    #[test]
    fn openai_prefix_is_the_messages_up_to_the_first_user_message() {
        let turn1 = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#;
        let turn2 = br#"{"model":"m","stream":true,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#;
        let a = openai(turn1).unwrap();
        assert_eq!(a, openai(turn2).unwrap());
        let other_system = br#"{"messages":[{"role":"system","content":"be long"},{"role":"user","content":"hi"}]}"#;
        assert_ne!(a, openai(other_system).unwrap());
        let with_tools = br#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"tools":[{"type":"function"}]}"#;
        assert_ne!(a, openai(with_tools).unwrap());
        assert_eq!(openai(br#"{"messages":[]}"#), None);
        assert_eq!(openai(b"not json"), None);
    }

    #[test]
    fn a_malformed_tail_does_not_matter() {
        // Routing reads loosely; the translation reports what is wrong with the body.
        let body = br#"{"messages":[{"role":"user","content":"hi"}, 17, {"role":5}]}"#;
        let good = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(openai(body), openai(good));
    }
}
