//! The admin API's error body: `{"error":{"code":"…","message":"…","details":[…]}}`.
//!
//! Client routes answer in the Anthropic or OpenAI shape instead; those live in relayd, next to
//! the handlers that produce them.

use serde::{Deserialize, Serialize};

/// Top-level error body of every failed admin API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminErrorBody {
    /// The error itself.
    pub error: AdminError,
}

/// One admin API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminError {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`, `conflict`.
    pub code: String,
    /// Human-readable explanation naming the offending field or record.
    pub message: String,
    /// Field-level problems, when there are several (batch import validation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

/// One problem with one field of one input row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Zero-based index of the row in the input array, when the input is an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// The row's `name`, when it has a readable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The field at fault (`None` when the row as a whole is wrong, e.g. not an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(row) = self.row {
            write!(f, "row {row}")?;
            if let Some(name) = &self.name {
                write!(f, " ({name:?})")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}
