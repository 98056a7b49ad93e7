//! User messages as OpenAI messages: `tool_result` blocks become tool messages, and text, image
//! and document blocks the parts of one user message (documents may nest, up to a bound).

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::super::TranslateError;
use super::super::json::{Path, parse_request};
use super::TEXT_JOINER;
use super::convert::{OutMessage, Part, SERVER_SIDE_BLOCKS, blocks, decode_id, push_user};
use super::wire::{Block, Source};

/// A user message: tool results become tool messages, the other blocks one user message.
pub(super) fn convert_user<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    out: &mut Vec<OutMessage<'a>>,
) -> Result<(), TranslateError> {
    let blocks = match blocks(raw, path)? {
        Ok(blocks) => blocks,
        Err(text) => {
            push_user(out, vec![Part::Text(text)]);
            return Ok(());
        }
    };
    let mut parts = Vec::new();
    let mut tool_images = Vec::new();
    let (mut blocks, mut j) = (blocks, 0);
    while let Some(block) = blocks.next(path.index(j)) {
        let block_path = path.index(j);
        j += 1;
        let block = block?;
        match block.kind.as_ref() {
            "tool_result" => {
                let Some(id) = block.tool_use_id else {
                    return Err(TranslateError::request(
                        block_path.key("tool_use_id"),
                        "field required",
                    ));
                };
                let mut content = String::new();
                if block.is_error == Some(true) {
                    content.push_str("Error: ");
                }
                if let Some(inner) = block.content {
                    tool_result_content(
                        inner,
                        block_path.key("content"),
                        &mut content,
                        &mut tool_images,
                        0,
                    )?;
                }
                let id = decode_id(id);
                out.push(OutMessage::Tool { id, content });
            }
            _ => content_part(block, block_path, &mut parts, 0)?,
        }
    }
    // Images returned by tools can only travel in a user message; it follows the tool messages and
    // merges with the rest of this user message.
    if !tool_images.is_empty() {
        push_user(out, tool_images);
    }
    if !parts.is_empty() {
        push_user(out, parts);
    }
    Ok(())
}

/// Deepest nesting of documents (a document whose `content` source holds another document) that
/// is translated. Each level is a sub-document parsed on its own, so serde_json's recursion limit
/// does not bound it, and without this limit a body of nested documents recursed until the
/// serving thread's stack overflowed, aborting relayd (found by the fuzz bench; 1,000 levels
/// were enough in a debug build). Anthropic's API takes only text and images in a document's
/// content, so real requests never come near it.
const MAX_DOCUMENT_NESTING: usize = 8;

/// A user-side block that becomes a content part (text, image, document); others are dropped.
/// `depth` is the number of documents around the block.
fn content_part<'a>(
    block: Block<'a>,
    path: Path<'_>,
    parts: &mut Vec<Part<'a>>,
    depth: usize,
) -> Result<(), TranslateError> {
    match block.kind.as_ref() {
        "text" => match block.text {
            Some(text) => parts.push(Part::Text(text)),
            None => {
                return Err(TranslateError::request(path.key("text"), "field required"));
            }
        },
        "image" => image_part(block.source, path, parts)?,
        "document" => document_part(block.source, path, parts, depth)?,
        // Blocks that only mean something to Anthropic's own servers carry nothing an
        // OpenAI-compatible upstream could use.
        kind if SERVER_SIDE_BLOCKS.contains(&kind) => {
            tracing::debug!(kind = %block.kind, "dropping server-side content block");
        }
        // Anything else would be lost without a word: refuse it, as Anthropic refuses what it
        // does not know.
        other => {
            return Err(TranslateError::request(
                path.key("type"),
                format!(
                    "unsupported content block type {other:?} (text, image, document and tool_result can be sent to this upstream)"
                ),
            ));
        }
    }
    Ok(())
}

/// An image block's source as an image part (a `data:` URL for base64 data).
fn image_part<'a>(
    raw: Option<&'a RawValue>,
    path: Path<'_>,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let source = source(raw, path)?;
    match source.kind.as_ref() {
        "base64" => {
            let (Some(media), Some(data)) = (source.media_type, source.data) else {
                return Err(TranslateError::request(
                    path.key("source"),
                    "base64 image needs media_type and data",
                ));
            };
            parts.push(Part::Image([
                Cow::Borrowed("data:"),
                media,
                Cow::Borrowed(";base64,"),
                data,
            ]));
        }
        "url" => match source.url {
            Some(url) => parts.push(Part::Image([
                url,
                Cow::Borrowed(""),
                Cow::Borrowed(""),
                Cow::Borrowed(""),
            ])),
            None => {
                return Err(TranslateError::request(
                    path.key("source").key("url"),
                    "field required",
                ));
            }
        },
        other => {
            return Err(TranslateError::request(
                path,
                format!("unsupported image source {other:?}"),
            ));
        }
    }
    Ok(())
}

/// A document block's source as content parts: its text, or its content's text and images.
fn document_part<'a>(
    raw: Option<&'a RawValue>,
    path: Path<'_>,
    parts: &mut Vec<Part<'a>>,
    depth: usize,
) -> Result<(), TranslateError> {
    let source = source(raw, path)?;
    match (source.kind.as_ref(), source.data, source.content) {
        ("text", Some(data), _) => parts.push(Part::Text(data)),
        ("content", _, Some(content)) => {
            let content_path = path.key("source");
            let content_path = content_path.key("content");
            if depth >= MAX_DOCUMENT_NESTING {
                return Err(TranslateError::request(
                    content_path,
                    format!("documents nested more than {MAX_DOCUMENT_NESTING} deep"),
                ));
            }
            let mut text = String::new();
            let mut images = Vec::new();
            tool_result_content(content, content_path, &mut text, &mut images, depth + 1)?;
            parts.push(Part::Text(Cow::Owned(text)));
            parts.extend(images);
        }
        (other, _, _) => {
            return Err(TranslateError::request(
                path,
                format!(
                    "unsupported document source {other:?} (only text documents can be sent to this upstream)"
                ),
            ));
        }
    }
    Ok(())
}

fn source<'a>(raw: Option<&'a RawValue>, path: Path<'_>) -> Result<Source<'a>, TranslateError> {
    match raw {
        Some(raw) => parse_request(raw, path.key("source")),
        None => Err(TranslateError::request(
            path.key("source"),
            "field required",
        )),
    }
}

/// Text of a tool result or a document's content (string or blocks); images are collected for a
/// following user message. `depth` is the number of documents around the content.
fn tool_result_content<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    text: &mut String,
    images: &mut Vec<Part<'a>>,
    depth: usize,
) -> Result<(), TranslateError> {
    let blocks = match blocks(raw, path)? {
        Ok(blocks) => blocks,
        Err(s) => {
            text.push_str(&s);
            return Ok(());
        }
    };
    let mut first = true;
    let (mut blocks, mut k) = (blocks, 0);
    while let Some(block) = blocks.next(path.index(k)) {
        let block_path = path.index(k);
        k += 1;
        let block = block?;
        let mut parts = Vec::new();
        content_part(block, block_path, &mut parts, depth)?;
        for part in parts {
            match part {
                Part::Text(t) => {
                    if !first {
                        text.push_str(TEXT_JOINER);
                    }
                    first = false;
                    text.push_str(&t);
                }
                image @ Part::Image(_) => images.push(image),
            }
        }
    }
    Ok(())
}
