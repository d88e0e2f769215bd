//! The error body every non-2xx admin answer carries.

use serde::{Deserialize, Serialize};

use crate::policy::ValidationIssue;

/// `{"error": "<code>", "message": "<what went wrong and what to do>"}`, plus the field and line
/// at fault when the problem is in the request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ValidationIssue>,
    /// `unknown` when a write's outcome cannot be told (the database connection was lost while
    /// it committed): the change may have been made. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}
