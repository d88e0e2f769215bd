//! Change records: one for every admin write, readable at `GET /admin/changes`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an admin write changed, written in the same transaction as the write itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRecord {
    /// Monotonic sequence number; the order in which changes were committed.
    pub seq: i64,
    pub id: String,
    pub timestamp: String,
    /// `agent`, `policy` or `alert_channel`.
    pub kind: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    /// `create`, `update`, `delete` (revoke, for agents) or `token_reissue`.
    pub operation: String,
    /// Names of the fields whose value changed.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The object before the write, secrets redacted; absent for a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The object after the write, secrets redacted; absent for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// `sha256:<hex>` of the object before and after (over the stored form, secrets included,
    /// so a secret rotation changes the digest without revealing the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_digest: Option<String>,
    /// From the `X-MeshGuard-Approver` request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// From the `X-MeshGuard-Change-Ticket` request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the write took effect: for a policy, once the engine decides with a snapshot that
    /// holds it (absent while it does not); for agents and alert channels, the commit. Absent
    /// on records written before gateways kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
    /// The id of the change this one replaced on the same object: the record whose `after`
    /// state a rollback restores (this record's `before` holds it too). Absent for a create,
    /// which a delete rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_ref: Option<String>,
}

/// `{"changes": [...]}`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeList {
    pub changes: Vec<ChangeRecord>,
}
