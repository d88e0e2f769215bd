//! Storage behind a trait: the embedded SQLite database (one gateway) or PostgreSQL (several
//! gateways sharing one control plane).
//!
//! Every write takes the [`ChangeDraft`] describing it and commits the object and its change
//! record in one transaction: a write is never visible without its record, and a record never
//! describes a write that did not happen. Writes to an existing object carry the revision the
//! caller read (`expected`); a concurrent writer makes the store answer [`StoreError::Stale`]
//! instead of silently overwriting.
//!
//! The two stores share what the tables are: `tables.rs` holds, per table, its columns, the
//! statements on it and its row mapping; `dialect.rs` the few places SQLite and PostgreSQL
//! differ. Each store keeps its connections, transactions, locking and migrations.

mod channel_body;
mod dialect;
mod postgres;
mod secrets;
mod sqlite;
#[cfg(test)]
mod suite;
mod tables;

pub(crate) use postgres::{CentralQuery, PgStore};
pub(crate) use sqlite::{SCHEMA_VERSION, SqliteStore};

use meshguard_api::{ChangeRecord, ChannelType, Severity, Trigger};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) trust_tier: String,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) description: Option<String>,
    /// Seconds; `None` means the gateway default, `Some(0)` never expires.
    pub(crate) token_ttl: Option<u64>,
    /// Bumped on token re-issue: tokens carrying an older value are refused.
    pub(crate) token_version: i64,
    pub(crate) revision: i64,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) revoked_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PolicyRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Exactly as the client sent it.
    pub(crate) content: String,
    pub(crate) revision: i64,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelRecord {
    pub(crate) id: String,
    pub(crate) kind: ChannelType,
    pub(crate) endpoint: String,
    pub(crate) name: Option<String>,
    pub(crate) severity: Option<Severity>,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) slack_channel: Option<String>,
    pub(crate) webhook_secret: Option<String>,
    pub(crate) pagerduty_routing_key: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) revision: i64,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

/// Where the key that seals alert-channel secrets comes from: a PKCS#11 token (`uri`), a value
/// given in base64 (`value`, `SECRETS_KEY`), or a file (`file`, created when missing). With a
/// token, the file is read once to move secrets sealed under it into the token.
#[derive(Clone)]
pub(crate) struct KeySource {
    pub(crate) file: std::path::PathBuf,
    pub(crate) uri: Option<String>,
    pub(crate) value: Option<String>,
}

impl KeySource {
    #[cfg(test)]
    pub(crate) fn file(path: &std::path::Path) -> Self {
        Self {
            file: path.to_owned(),
            uri: None,
            value: None,
        }
    }
}

/// A change record before the store numbers it.
#[derive(Debug, Clone)]
pub(crate) struct ChangeDraft {
    pub(crate) id: String,
    pub(crate) timestamp: String,
    pub(crate) kind: &'static str,
    pub(crate) object_id: String,
    pub(crate) object_name: Option<String>,
    pub(crate) operation: &'static str,
    pub(crate) fields: Vec<String>,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    pub(crate) old_digest: Option<String>,
    pub(crate) new_digest: Option<String>,
    pub(crate) approver: Option<String>,
    pub(crate) change_ticket: Option<String>,
    pub(crate) trace_id: Option<String>,
    /// The create's `Idempotency-Key`, unique among changes (creates only).
    pub(crate) idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeFilter {
    pub(crate) kind: Option<String>,
    pub(crate) object_id: Option<String>,
    pub(crate) after_seq: Option<i64>,
    pub(crate) limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// Another writer changed the object since it was read.
    #[error("the object changed while this request was being applied")]
    Stale,
    /// A uniqueness rule was violated (a policy name already in use).
    #[error("{0}")]
    Conflict(String),
    #[error("storage failure: {0}")]
    Backend(String),
    /// The database cannot be reached (a server database down or restarting); nothing was done.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The connection was lost while the transaction committed: the change may or may not
    /// have been made. A create sent again with its `Idempotency-Key` settles it.
    #[error("the database connection was lost while the change committed: {0}")]
    OutcomeUnknown(String),
    /// `Write::InsertCapped` found this many active agents already.
    #[error("{0} agents are active, as many as allowed")]
    AgentLimit(u64),
}

/// Which write to perform on an object.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    Insert,
    /// Insert an agent only while fewer than this many agents are active (not revoked): the
    /// license's `maxAgents`, counted in the write's own transaction, so concurrent creates on
    /// several gateways cannot overshoot it. Agents only.
    InsertCapped(u64),
    /// Update the row whose revision is this one.
    Update {
        expected: i64,
    },
    /// Delete the row whose revision is this one.
    Delete {
        expected: i64,
    },
}

pub(crate) trait Store: Send + Sync + 'static {
    fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError>;
    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Agents are never deleted: revocation is an update that sets `revoked_at`.
    fn save_agent(
        &self,
        rec: &AgentRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError>;

    fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>, StoreError>;
    fn get_policy_by_name(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError>;
    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    fn save_policy(
        &self,
        rec: &PolicyRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError>;

    fn get_channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;
    fn list_channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    fn save_channel(
        &self,
        rec: &ChannelRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError>;

    fn list_changes(&self, filter: &ChangeFilter) -> Result<Vec<ChangeRecord>, StoreError>;
    /// The object a create with this `Idempotency-Key` made: `(kind, object id)`.
    fn created_with_key(&self, key: &str) -> Result<Option<(String, String)>, StoreError>;

    /// Records when a change took effect (a policy write, once the engine's snapshot holds it).
    fn mark_deployed(&self, change_id: &str, at: &str) -> Result<(), StoreError>;

    /// Keeps an alert that could not be delivered, for `GET /admin/alerts/undelivered`.
    fn save_undelivered(&self, alert: &Value) -> Result<(), StoreError>;
    fn list_undelivered(&self, limit: usize) -> Result<Vec<Value>, StoreError>;

    /// Records the outcome of one alert on one channel (delivered or not), for evidence:
    /// `GET /admin/alerts/deliveries`.
    fn record_delivery(&self, delivery: &Value) -> Result<(), StoreError>;
    /// Deliveries recorded at or after `from` and before `to` (RFC 3339), oldest first.
    fn list_deliveries(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError>;

    /// The sequence number of the newest change record (0 when there is none): where a
    /// gateway following the control plane starts.
    fn last_change_seq(&self) -> Result<i64, StoreError>;

    /// Cheap liveness probe for `/health`.
    fn ping(&self) -> Result<(), StoreError>;

    fn get_sidecar(&self, origin: &str) -> Result<Option<SidecarRecord>, StoreError>;
    fn list_sidecars(&self) -> Result<Vec<SidecarRecord>, StoreError>;
    /// Registers a sidecar, or records its heartbeat; never changes a registered sidecar's
    /// agent or key.
    fn save_sidecar(&self, rec: &SidecarRecord) -> Result<(), StoreError>;
}

/// A guardian sidecar as its heartbeats registered it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SidecarRecord {
    /// Its audit log's origin.
    pub(crate) origin: String,
    pub(crate) agent_id: String,
    /// The note verifier key its checkpoints are signed with.
    pub(crate) vkey: String,
    pub(crate) first_seen: String,
    pub(crate) last_seen: String,
    /// The policy bundle version it enforced at its last heartbeat.
    pub(crate) bundle_version: Option<u64>,
    /// How many of its entries this gateway holds.
    pub(crate) held: u64,
    /// The digest of the policy set it enforced at its last heartbeat (`policy_set_digest`).
    pub(crate) policy_digest: Option<String>,
    /// The Merkle frontier of its `held` entries (`audit::merkle::Frontier::to_bytes`).
    pub(crate) frontier: Option<Vec<u8>>,
}
