//! Fuzz target `import`: the batch-import file parser and validator (`shared::import`).
//!
//! Files are arrays of account rows built field by field (every key of the format, with URLs,
//! names, model lists and numbers at and beyond their limits, odd types, unknown keys,
//! duplicate names, rows that are not objects), the users' real file with subtrees replaced,
//! other JSON documents, and raw bytes.
//!
//! Properties: nothing panics; an accepted file gives one valid row per element, in order, with
//! unique trimmed names, endpoints without a trailing slash and numbers within their limits; a
//! rejected file gives at least one error, each naming its row (and, for a row that is an
//! object, its field), or one error for the file as a whole.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use shared::account::MAX_CONCURRENCY;
use shared::import::parse_import;

use crate::inputs::{
    Shown, Spliceable, array, array_text, boolean, lit, member, mutated, number, object, odd,
    raw_bytes, required, str_lit, str_lit_or, text,
};

/// One generated case: a whole import file.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    file: Shown,
}

/// The users' own file.
static FIXTURE: LazyLock<Vec<(u32, Spliceable)>> = LazyLock::new(|| {
    vec![(
        1,
        Spliceable::parse(include_str!("../../../examples/custom-models.json")),
    )]
});

const NAMES: &[&str] = &[
    "qwen",
    "Qwen3-32B",
    "  padded  ",
    "",
    "acc_0123456789abcdef",
    "acc_0123456789ABCDEF",
    "tab\there",
    "é日本語😀",
];

const ENDPOINTS: &[&str] = &[
    "http://198.51.100.5:8000/v1",
    "https://my-resource.openai.azure.com",
    "https://my-resource.OPENAI.AZURE.COM/",
    "http://[::1]:8000/v1/",
    "http://localhost:11434/v1?x=1",
    "http://localhost/#frag",
    "http://user:pass@host/v1",
    "ftp://host/v1",
    "http://",
    "http:///v1",
    "file:///etc/passwd",
    "  http://host  ",
    "http://host:99999",
    "http://xn--nxasmq6b.example/v1",
    "http://日本.example/v1",
    "http://%41/",
    "data:text/plain,x",
    "",
    "not a url",
];

const PROXIES: &[&str] = &[
    "http://proxy:3128",
    "socks5://user:secret@proxy:1080",
    "socks5h://proxy",
    "https://u:p@proxy",
    "ftp://proxy",
    "socks5://",
    "",
    "  ",
    "::",
];

const MODELS: &[&str] = &[
    "claude-3-5-sonnet-20241022",
    "gpt-4o",
    "claude-*opus*",
    "*",
    "",
    " ",
    "a b",
    "claude\u{0}x",
];

fn row() -> BoxedStrategy<String> {
    let name = prop_oneof![
        6 => str_lit_or(NAMES),
        1 => (proptest::sample::select(&["a", "é", "😀"][..]), 120..140usize)
            .prop_map(|(c, n)| lit(&c.repeat(n))),
    ];
    let endpoint_key = proptest::sample::select(&["endpoint", "azureEndpoint"][..]);
    let endpoint = (endpoint_key, str_lit_or(ENDPOINTS)).prop_map(|(k, v)| Some((lit(k), v)));
    let endpoint = prop_oneof![12 => endpoint, 1 => Just(None)].boxed();
    object(vec![
        required("name", name.boxed()),
        endpoint,
        required("deploymentName", str_lit_or(&["qwen3-32b", " ", ""])),
        member(
            "apiKey",
            prop_oneof![4 => str_lit_or(&["sk-abc", "", "a\nb"]), 1 => Just("null".to_owned())]
                .boxed(),
        ),
        member(
            "kind",
            str_lit_or(&["openai", "azure", "Azure", "anthropic"]),
        ),
        member("apiVersion", str_lit_or(&["2024-10-21", " ", ""])),
        member("supportedModels", array(str_lit_or(MODELS), 5)),
        member("priority", number()),
        member("concurrency", number()),
        member(
            "proxy",
            prop_oneof![4 => str_lit_or(PROXIES), 1 => Just("null".to_owned())].boxed(),
        ),
        member("enabled", boolean()),
        member("description", str_lit()),
        member("maxOutputTokens", number()),
        member(
            "thinking",
            str_lit_or(&[
                "drop",
                "reasoningEffort",
                "enableThinking",
                "enable_thinking",
            ]),
        ),
        member("useMaxCompletionTokens", boolean()),
        member("sendReasoningContent", boolean()),
    ])
}

/// The strategy for [`Case`].
pub(crate) fn cases() -> BoxedStrategy<Case> {
    // The name pool is small, so files with duplicate names come up often.
    let rows = prop::collection::vec(prop_oneof![12 => row(), 1 => odd()], 0..6)
        .prop_map(|rows| array_text(&rows));
    let file = prop_oneof![
        12 => rows.prop_map(String::into_bytes),
        4 => mutated(&FIXTURE, prop_oneof![3 => odd(), 1 => row(), 1 => text().prop_map(|t| lit(&t))].boxed()),
        1 => odd().prop_map(String::into_bytes),
        1 => raw_bytes(),
    ];
    file.prop_map(|file| Case { file: Shown(file) }).boxed()
}

/// Checks every property on one case.
pub(crate) fn check(case: &Case) -> Result<(), TestCaseError> {
    let bytes = &case.file.0;
    let rows: Option<Vec<Value>> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(rows)) => Some(rows),
        _ => None,
    };
    match parse_import(bytes) {
        Ok(parsed) => {
            let Some(rows) = rows else {
                return Err(TestCaseError::fail("accepted a file that is not an array"));
            };
            prop_assert_eq!(parsed.len(), rows.len());
            let mut names = std::collections::HashSet::new();
            for (i, row) in parsed.iter().enumerate() {
                let s = &row.settings;
                prop_assert_eq!(row.index, i);
                prop_assert!(
                    !s.name.is_empty() && s.name.trim() == s.name,
                    "name {:?}",
                    s.name
                );
                prop_assert!(names.insert(s.name.clone()), "duplicate name {:?}", s.name);
                prop_assert!(!s.endpoint.ends_with('/'), "endpoint {:?}", s.endpoint);
                prop_assert!(
                    s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://")
                );
                prop_assert!((1..=100).contains(&s.priority));
                prop_assert!((1..=MAX_CONCURRENCY).contains(&s.concurrency));
                prop_assert!(!s.deployment_name.is_empty() && !s.api_version.is_empty());
                prop_assert!(!s.supported_models.is_empty());
                prop_assert!(s.max_output_tokens != Some(0));
            }
            Ok(())
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty(), "rejected without a reason");
            for error in &errors {
                prop_assert!(!error.message.is_empty() && !error.to_string().is_empty());
                match (&rows, error.row) {
                    (None, None) => prop_assert_eq!(errors.len(), 1, "more than one file error"),
                    (Some(rows), Some(row)) => {
                        prop_assert!(row < rows.len(), "error for row {} of {}", row, rows.len());
                        if rows[row].is_object() {
                            prop_assert!(error.field.is_some(), "no field named: {:?}", error);
                        }
                    }
                    _ => {
                        return Err(TestCaseError::fail(format!(
                            "error {error:?} does not fit the file"
                        )));
                    }
                }
            }
            Ok(())
        }
    }
}
