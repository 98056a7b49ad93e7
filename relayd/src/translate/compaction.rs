//! Claude Code's compaction request, shrunk to fit a small context window.
//!
//! `/compact` (and Claude Code's automatic compaction) resends the whole conversation followed by
//! a user message asking for a summary of it. On an upstream whose window the conversation has
//! already outgrown, that request overflows too and Claude Code gives up ("Compaction failed ·
//! conversation could not be reduced below the context limit"). A summary does not need every
//! byte of every file the session read, so relayd cuts the middle out of the largest tool
//! results — oldest first, leaving each one's head and tail and a visible marker saying what was
//! cut — until the request fits. No other request is ever altered this way:
//! [`is_compaction_request`] recognises the summary instruction, and the caller checks it first.

use serde_json::Value;

use super::tokens::text_tokens;
use super::{TranslateError, describe_json_error};

/// The start of Claude Code's summary instruction (2.x), the last user message of a compaction.
const SUMMARY_INSTRUCTION: &str =
    "Your task is to create a detailed summary of the conversation so far";

/// Tool results below this many tokens are never cut: the savings would not be worth the loss.
const MIN_CUT_TOKENS: u64 = 256;

/// Characters kept at each end of a cut tool result, on the first pass and on the last.
const KEEP_CHARS: [usize; 2] = [2_000, 400];

/// Whether `body` is Claude Code's compaction request: its last message is the user's summary
/// instruction. Cheap for every other request (a substring search before any parsing).
pub fn is_compaction_request(body: &[u8]) -> bool {
    if memchr::memmem::find(body, SUMMARY_INSTRUCTION.as_bytes()).is_none() {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    value
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.last())
        .is_some_and(|last| {
            last.get("role").and_then(Value::as_str) == Some("user")
                && texts(last.get("content")).any(|t| t.contains(SUMMARY_INSTRUCTION))
        })
}

/// What a shrink did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    /// The new request body.
    pub body: Vec<u8>,
    /// Tool results cut.
    pub cut_results: usize,
    /// Tokens removed (local estimate).
    pub removed_tokens: u64,
}

/// Cuts the middle of the largest tool results of `body`, oldest first, until about `excess`
/// tokens (local estimate) are gone. `None` when even the deepest cut of every eligible result
/// does not remove that much: the request cannot be made to fit. `window` is only named in the
/// marker, so whoever reads the summary knows why text is missing.
pub fn shrink_compaction(
    body: &[u8],
    excess: u64,
    window: u32,
) -> Result<Option<Shrunk>, TranslateError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::request("body", describe_json_error(&e)))?;
    for keep in KEEP_CHARS {
        let mut copy = value.clone();
        let (cut_results, removed_tokens) = cut_until(&mut copy, excess, keep, window);
        if removed_tokens >= excess {
            value = copy;
            let body = serde_json::to_vec(&value)
                .map_err(|e| TranslateError::request("body", e.to_string()))?;
            return Ok(Some(Shrunk {
                body,
                cut_results,
                removed_tokens,
            }));
        }
    }
    Ok(None)
}

/// One pass: cuts eligible tool results (all but the last message's) oldest first, keeping
/// `keep` characters at each end, until `excess` tokens are removed. Returns what it cut.
fn cut_until(value: &mut Value, excess: u64, keep: usize, window: u32) -> (usize, u64) {
    let mut removed = 0u64;
    let mut cut = 0usize;
    let Some(messages) = value.get_mut("messages").and_then(Value::as_array_mut) else {
        return (0, 0);
    };
    let last = messages.len().saturating_sub(1);
    for message in messages.iter_mut().take(last) {
        let Some(blocks) = message.get_mut("content").and_then(Value::as_array_mut) else {
            continue;
        };
        for block in blocks {
            if removed >= excess {
                return (cut, removed);
            }
            if block.get("type").and_then(Value::as_str) != Some("tool_result") {
                continue;
            }
            if let Some(content) = block.get_mut("content") {
                let saved = cut_content(content, keep, window);
                if saved > 0 {
                    cut += 1;
                    removed += saved;
                }
            }
        }
    }
    (cut, removed)
}

/// Cuts a tool result's content (a string, or a list of blocks whose text blocks are cut one
/// by one); returns the tokens saved.
fn cut_content(content: &mut Value, keep: usize, window: u32) -> u64 {
    match content {
        Value::String(text) => cut_text(text, keep, window),
        Value::Array(blocks) => blocks
            .iter_mut()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| match b.get_mut("text") {
                Some(Value::String(text)) => Some(cut_text(text, keep, window)),
                _ => None,
            })
            .sum(),
        _ => 0,
    }
}

/// Replaces the middle of `text` with a marker, keeping `keep` characters at each end; returns
/// the tokens saved (0 when the text is too small to be worth cutting).
fn cut_text(text: &mut String, keep: usize, window: u32) -> u64 {
    if text_tokens(text) < MIN_CUT_TOKENS {
        return 0;
    }
    let chars = text.chars().count();
    if chars <= 2 * keep {
        return 0;
    }
    let head_end = byte_offset(text, keep);
    let tail_start = byte_offset(text, chars - keep);
    let middle = &text[head_end..tail_start];
    let marker = format!(
        "\n\n[… relayd cut {} characters from the middle of this tool result so that the \
         summary request fits the model's {window}-token context window …]\n\n",
        chars - 2 * keep
    );
    let saved = text_tokens(middle).saturating_sub(text_tokens(&marker));
    if saved == 0 {
        return 0;
    }
    let mut shrunk = String::with_capacity(head_end + marker.len() + text.len() - tail_start);
    shrunk.push_str(&text[..head_end]);
    shrunk.push_str(&marker);
    shrunk.push_str(&text[tail_start..]);
    *text = shrunk;
    saved
}

/// The byte offset of character `n` of `text`.
fn byte_offset(text: &str, n: usize) -> usize {
    text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)
}

/// The text pieces of a message's content: the string itself, or its text blocks.
fn texts(content: Option<&Value>) -> impl Iterator<Item = &str> {
    let (single, list) = match content {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(blocks)) => (None, Some(blocks.iter())),
        _ => (None, None),
    };
    single.into_iter().chain(
        list.into_iter()
            .flatten()
            .filter_map(|b| b.get("text").and_then(Value::as_str)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conversation(results: &[usize]) -> Value {
        let mut messages = vec![json!({"role": "user", "content": "read the files"})];
        for (i, &len) in results.iter().enumerate() {
            messages.push(json!({"role": "assistant", "content": [
                {"type": "tool_use", "id": format!("t{i}"), "name": "Read", "input": {}}
            ]}));
            messages.push(json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": format!("t{i}"),
                 "content": format!("BEGIN{i} {} END{i}", "x".repeat(len))}
            ]}));
        }
        messages.push(json!({"role": "user", "content": [
            {"type": "text", "text": format!("{SUMMARY_INSTRUCTION}, paying close attention …")}
        ]}));
        json!({"model": "m", "max_tokens": 100, "messages": messages})
    }

    fn result_text(body: &[u8], i: usize) -> String {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["messages"][2 + 2 * i]["content"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn only_the_summary_instruction_as_last_user_message_is_a_compaction() {
        let body = serde_json::to_vec(&conversation(&[10])).unwrap();
        assert!(is_compaction_request(&body));
        let mut quoted = conversation(&[10]);
        quoted["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "user", "content": "and now something else"}));
        assert!(!is_compaction_request(
            &serde_json::to_vec(&quoted).unwrap()
        ));
        assert!(!is_compaction_request(b"{\"messages\":[]}"));
    }

    #[test]
    fn the_oldest_large_results_are_cut_in_the_middle_first() {
        let body = serde_json::to_vec(&conversation(&[40_000, 100, 40_000])).unwrap();
        let shrunk = shrink_compaction(&body, 5_000, 8192).unwrap().unwrap();
        assert_eq!(shrunk.cut_results, 1);
        assert!(shrunk.removed_tokens >= 5_000);
        let first = result_text(&shrunk.body, 0);
        assert!(first.starts_with("BEGIN0 ") && first.ends_with(" END0"));
        assert!(first.contains("relayd cut") && first.contains("8192-token"));
        // The small one and the newer large one are untouched.
        assert_eq!(result_text(&shrunk.body, 1), result_text(&body, 1));
        assert_eq!(result_text(&shrunk.body, 2), result_text(&body, 2));
    }

    #[test]
    fn a_deeper_cut_is_made_only_when_the_first_is_not_enough() {
        let body = serde_json::to_vec(&conversation(&[6_000, 6_000])).unwrap();
        let shallow = shrink_compaction(&body, 100, 4096).unwrap().unwrap();
        assert!(result_text(&shallow.body, 0).len() > 3_900);
        let deep = shrink_compaction(&body, 2_500, 4096).unwrap().unwrap();
        assert_eq!(deep.cut_results, 2);
        assert!(result_text(&deep.body, 0).len() < 1_200);
    }

    #[test]
    fn a_request_that_cannot_fit_is_left_alone() {
        let body = serde_json::to_vec(&conversation(&[3_000])).unwrap();
        assert_eq!(shrink_compaction(&body, 50_000, 4096).unwrap(), None);
    }
}
