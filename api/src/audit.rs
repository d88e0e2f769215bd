//! Audit entries: one per decision, as `GET /admin/audit` returns them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One decision, as recorded in the gateway's tamper-evident audit log.
///
/// The stored form is the canonical JSON (sorted keys, no whitespace) of this object; its hash
/// chains to the previous entry of the same source and it is a leaf of the log's Merkle tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// `aud_…`
    pub id: String,
    pub timestamp: String,
    /// `decision` for a policy decision, `bypass_attempt` for a data-plane call without a valid
    /// agent token.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_tier: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `allow` or `deny`: the real decision (in audit mode, what enforce mode would have done).
    pub decision: String,
    /// What the caller got: `allow`, `deny`, or `allow` with `wouldDeny` in audit mode.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub trace_id: String,
    /// `enforce`, `audit` or `bypass`.
    pub mode: String,
    /// The policy snapshot the decision was made against.
    #[serde(default)]
    pub snapshot: u64,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_deny: bool,
    /// The fields cut to fit an entry (at most 2 KiB of JSON each; see the gateway's
    /// `audit::bound`), by name (`path`, `meta.user`, or `meta` when the whole context was
    /// dropped), each with the full value's length and SHA-256, so the original can still be
    /// matched against a copy kept elsewhere.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub truncated: std::collections::BTreeMap<String, Truncated>,
}

/// What a cut field held (see [`AuditEntry::truncated`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// The full value's length in bytes (of its JSON text, for a context value).
    pub length: u64,
    /// The full value's SHA-256, in hex.
    pub sha256: String,
}

/// `{"entries": [...]}`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    pub entries: Vec<AuditRecord>,
}

/// An entry with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// 1-based position in this gateway's log (the Merkle leaf index is `seq - 1`).
    pub seq: u64,
    /// The chain the entry belongs to: this gateway's origin, or a sidecar's for ingested ones.
    pub source: String,
    /// Hex SHA-256 of the previous entry's hash of the same source and this entry's canonical JSON.
    pub hash: String,
}

/// One line of `GET /admin/audit/export` (JSON lines) and of `POST /admin/audit/ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditExportLine {
    pub seq: u64,
    pub source: String,
    pub prev_hash: String,
    pub hash: String,
    pub entry: Value,
}
