//! Wire types of the MeshGuard gateway HTTP API.
//!
//! These are the JSON bodies that cross the admin API: the gateway serializes them, the Terraform
//! provider deserializes them. The casing, the optional fields and the absence of `null` follow
//! `shared/reference/meshguard-api.md`: existing MeshGuard SDKs decode these bodies, and several of
//! them fail on a `null` where they expect a string or a list, so every optional field here is
//! omitted when empty rather than sent as `null`.
//!
//! Invariant: this crate depends on serde and serde_json only; no runtime, no I/O.

mod agent;
mod alert;
mod audit;
mod change;
mod error;
mod policy;
mod tier;

pub use agent::{Agent, AgentCreated, CreateAgent, TokenIssued, UpdateAgent};
pub use alert::{AlertChannel, AlertChannelInput, ChannelType, Severity, Trigger};
pub use audit::{AuditEntry, AuditExportLine, AuditList, AuditRecord, Truncated};
pub use change::{ChangeList, ChangeRecord};
pub use error::ErrorBody;
pub use policy::{
    CreatePolicy, Policy, PolicyRuleSummary, UpdatePolicy, ValidationIssue, ValidationReport,
};
pub use tier::{CANONICAL_TIERS, TrustTier, UnknownTier};

/// `{"agents": [...]}` as returned by `GET /admin/agents`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// `{"policies": [...]}` as returned by `GET /admin/policies`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PolicyList {
    pub policies: Vec<Policy>,
}

/// `{"channels": [...]}` as returned by `GET /admin/alert-channels`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AlertChannelList {
    pub channels: Vec<AlertChannel>,
}
