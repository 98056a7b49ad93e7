//! `supportedModels` lists: checking one, and matching a client's model name against its exact
//! names and `*` patterns.

use super::{MAX_MODEL_CHARS, MAX_MODELS};

/// Checks a `supportedModels` list: non-empty, at most [`MAX_MODELS`] entries of at most
/// [`MAX_MODEL_CHARS`] characters, no blank entries, duplicates removed (first kept).
pub fn validate_models(list: Vec<String>) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("must not be empty (omit the field to get the default model names)".to_owned());
    }
    if list.len() > MAX_MODELS {
        return Err(format!(
            "must list at most {MAX_MODELS} names or patterns, got {}",
            list.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, model) in list.into_iter().enumerate() {
        let model = model.trim().to_owned();
        if model.is_empty() {
            return Err(format!("entry {i} is empty"));
        }
        if model.chars().count() > MAX_MODEL_CHARS {
            return Err(format!(
                "entry {i} must be at most {MAX_MODEL_CHARS} characters"
            ));
        }
        if model.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("entry {i} ({model:?}) contains whitespace"));
        }
        if !out.contains(&model) {
            out.push(model);
        }
    }
    Ok(out)
}

/// Whether a client-facing model name matches one `supportedModels` entry: an exact name, or a
/// pattern in which `*` stands for any run of characters (`claude-*opus*`).
pub fn model_matches(pattern: &str, model: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == model;
    }
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = model.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return true;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether a `supportedModels` entry is a pattern rather than an exact name.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains('*')
}
