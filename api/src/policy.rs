//! Policies: YAML documents stored byte for byte, with a parsed summary for SDKs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A policy as the admin API returns it.
///
/// `content` is exactly what the client sent. `rules` is a summary shaped for the typed SDKs:
/// every rule has a string `id` and a string `action` (the first pattern).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// `policy_…` for API policies, `file_…` for policies loaded from `POLICIES_DIR`.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub content: String,
    /// `sha256:<hex>` of `content`.
    pub digest: String,
    /// `api` or `file`.
    pub source: String,
    /// True for `POLICIES_DIR` policies, which the API cannot change.
    pub read_only: bool,
    pub active: bool,
    pub default_effect: String,
    #[serde(default)]
    pub rules: Vec<PolicyRuleSummary>,
    /// Increments on every update.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRuleSummary {
    pub id: String,
    pub name: String,
    pub effect: String,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// `POST /admin/policies`: `{name, content}` with YAML content, or a JSON policy object whose
/// fields are the document itself (then `content` is absent and `document` holds it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreatePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub document: Map<String, Value>,
}

/// `PUT`/`PATCH /admin/policies/:idOrName`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdatePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub document: Map<String, Value>,
}

/// One problem found in a policy document: where (a field path such as `rules[1].effect`, and the
/// line for YAML) and what is expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationIssue {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub message: String,
}

/// The answer to `POST /admin/policies/validate`: 200 when valid, 400 with the same shape when not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    pub valid: bool,
    #[serde(default)]
    pub errors: Vec<ValidationIssue>,
    #[serde(default)]
    pub warnings: Vec<ValidationIssue>,
}
