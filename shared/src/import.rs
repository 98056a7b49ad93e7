//! The batch-import file: a JSON array of [`AccountInput`] rows, in the format users already have
//! (`name`, `azureEndpoint`, `deploymentName`, `apiKey`, `supportedModels`) plus relayd's own keys.
//!
//! The whole file is validated before anything is written; every error names the row index, the
//! row's `name` when it has one, and the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::account::{AccountInput, AccountSecrets, AccountSettings};
use crate::error::FieldError;

/// One validated row, ready to upsert by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// Zero-based position in the file.
    pub index: usize,
    /// Settings with defaults applied.
    pub settings: AccountSettings,
    /// Secrets in clear (encrypted before they reach a store).
    pub secrets: AccountSecrets,
}

/// Parses and validates a whole import file. Returns every row, or every problem found.
pub fn parse_import(bytes: &[u8]) -> Result<Vec<ImportRow>, Vec<FieldError>> {
    let rows: Vec<Value> = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(rows)) => rows,
        Ok(other) => {
            return Err(vec![whole_file(format!(
                "expected a JSON array of accounts, got {}",
                json_type(&other)
            ))]);
        }
        Err(e) => return Err(vec![whole_file(format!("not valid JSON: {e}"))]),
    };
    parse_rows(rows)
}

/// Validates already-parsed rows (the admin API receives the array as JSON).
pub fn parse_rows(rows: Vec<Value>) -> Result<Vec<ImportRow>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, row) in rows.into_iter().enumerate() {
        let name = row
            .get("name")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned());
        let at = |field: Option<String>, message: String| FieldError {
            row: Some(index),
            name: name.clone(),
            field,
            message,
        };
        if !row.is_object() {
            errors.push(at(
                None,
                format!("expected an object, got {}", json_type(&row)),
            ));
            continue;
        }
        let input: AccountInput = match serde_path_to_error::deserialize(&row) {
            Ok(input) => input,
            Err(e) => {
                errors.push(field_error_from_serde(&e, at));
                continue;
            }
        };
        match input.validate() {
            Ok((settings, secrets)) => {
                if let Some(first) = seen.insert(settings.name.clone(), index) {
                    errors.push(at(
                        Some("name".to_owned()),
                        format!("duplicate name, already used by row {first}"),
                    ));
                }
                out.push(ImportRow {
                    index,
                    settings,
                    secrets,
                });
            }
            Err(errs) => errors.extend(errs.into_iter().map(|e| at(e.field, e.message))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Turns a serde error with its path into a field error. Unknown keys and missing keys carry the
/// key's name in serde's message rather than in the path, so those are pulled out of the message.
pub fn field_error_from_serde<E: std::fmt::Display>(
    e: &serde_path_to_error::Error<E>,
    at: impl Fn(Option<String>, String) -> FieldError,
) -> FieldError {
    let message = e.inner().to_string();
    let path = e.path().to_string();
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    // A duplicate comes from a key and its alias (`endpoint` and `azureEndpoint`); serde names
    // it in the message only, so without this the error named no field (found by fuzzing).
    let field = quoted("unknown field `")
        .or_else(|| quoted("missing field `"))
        .or_else(|| quoted("duplicate field `"))
        .or_else(|| (path != ".").then_some(path));
    // serde's "at line 1 column 5" suffix is meaningless for a value already parsed.
    let message = match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    at(field, message)
}

fn whole_file(message: String) -> FieldError {
    FieldError {
        row: None,
        name: None,
        field: None,
        message,
    }
}

/// A JSON value's type in words, for error messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What happened to one row of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportOutcome {
    /// A new account was created.
    Created,
    /// An existing account (same name) was changed.
    Updated,
    /// An existing account already matched the row.
    Unchanged,
    /// The row could not be applied.
    Failed,
}

impl ImportOutcome {
    /// Lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
        }
    }
}

/// One row's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRowResult {
    /// Zero-based position in the file.
    pub row: usize,
    /// Account name.
    pub name: String,
    /// What happened (or, in a dry run, what would happen).
    pub result: ImportOutcome,
    /// Which fields changed, or why the row failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The answer to an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Per-row results, in file order.
    pub rows: Vec<ImportRowResult>,
    /// Counts per outcome.
    pub summary: ImportSummary,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Rows created.
    pub created: usize,
    /// Rows updated.
    pub updated: usize,
    /// Rows already up to date.
    pub unchanged: usize,
    /// Rows that failed.
    pub failed: usize,
}

impl ImportSummary {
    /// Counts the outcomes of `rows`.
    pub fn of(rows: &[ImportRowResult]) -> Self {
        let mut s = Self::default();
        for r in rows {
            match r.result {
                ImportOutcome::Created => s.created += 1,
                ImportOutcome::Updated => s.updated += 1,
                ImportOutcome::Unchanged => s.unchanged += 1,
                ImportOutcome::Failed => s.failed += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_file_parses() {
        let rows = parse_import(include_bytes!("../../examples/custom-models.json")).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].settings.name, "Qwen3-32B");
        assert_eq!(
            rows[1].settings.supported_models,
            ["claude-3-5-sonnet-20241022", "gpt-4o"]
        );
        assert_eq!(rows[1].secrets.api_key.as_deref(), Some("sk-qwen32b"));
    }

    #[test]
    fn unknown_key_names_row_and_field() {
        let errs = parse_import(
            br#"[{"name":"ok","endpoint":"http://h","deploymentName":"d"},
                 {"name":"bad","endpoint":"http://h","deploymentName":"d","prio":3}]"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].row, Some(1));
        assert_eq!(errs[0].name.as_deref(), Some("bad"));
        assert_eq!(errs[0].field.as_deref(), Some("prio"));
    }

    #[test]
    fn wrong_type_names_row_and_field() {
        let errs = parse_import(
            br#"[{"name":"x","endpoint":"http://h","deploymentName":"d","priority":"high"}]"#,
        )
        .unwrap_err();
        assert_eq!(errs[0].field.as_deref(), Some("priority"));
        assert!(
            errs[0].message.contains("invalid type"),
            "{}",
            errs[0].message
        );
        assert_eq!(
            errs[0].to_string(),
            format!("row 0 (\"x\"): field `priority`: {}", errs[0].message)
        );
    }

    /// Found by the fuzz bench: a key and its alias in one row gave an error naming no field.
    #[test]
    fn key_and_alias_together_name_the_field() {
        let errs = parse_import(
            br#"[{"name":"a","azureEndpoint":"http://h","endpoint":"http://h","deploymentName":"d"}]"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].row, Some(0));
        assert_eq!(errs[0].field.as_deref(), Some("endpoint"));
        assert_eq!(errs[0].message, "duplicate field `endpoint`");
    }

    #[test]
    fn missing_field_and_duplicates_are_reported() {
        let errs = parse_import(
            br#"[{"name":"a","endpoint":"http://h"},
                 {"name":"b","endpoint":"http://h","deploymentName":"d"},
                 {"name":"b","endpoint":"http://h","deploymentName":"d"}]"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field.as_deref(), Some("deploymentName"));
        assert_eq!(errs[1].row, Some(2));
        assert!(errs[1].message.contains("duplicate"));
    }

    #[test]
    fn not_an_array_is_one_clear_error() {
        let errs = parse_import(br#"{"name":"a"}"#).unwrap_err();
        assert!(errs[0].message.contains("array"));
        let errs = parse_import(b"[{").unwrap_err();
        assert!(errs[0].message.contains("not valid JSON"));
    }
}
