//! The gateway's configuration as audit entries (`configuration`): written when the gateway
//! starts and whenever a setting that bears on compliance changes while it runs (a newer egress
//! allowlist). Evidence reads the settings in force over a period from these entries, in the
//! signed log, rather than from what the gateway says at export time.

use meshguard_api::AuditEntry;
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// The event name of configuration entries.
pub(crate) const EVENT: &str = "configuration";

/// The entry recording the settings in force now; `why` says what prompted it.
pub(crate) fn entry(state: &AppState, why: &str) -> AuditEntry {
    let c = &state.config;
    let mut meta = Map::new();
    // Unset settings are left out: clients' typed SDKs fail on null.
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            meta.insert(k.to_owned(), v);
        }
    };
    put("why", json!(why));
    put("gatewayVersion", json!(env!("CARGO_PKG_VERSION")));
    put("region", json!(c.region));
    put("deploymentMode", json!(c.deployment_mode));
    let egress = state.egress.as_ref();
    put("egressProxy", json!(egress.is_some()));
    put(
        "egressAllowlist",
        egress.map_or(Value::Null, |e| e.describe()),
    );
    put("egressRegions", json!(c.egress_regions));
    put("changeApprovalRequired", json!(c.change_approval_required));
    put(
        "changeApprovers",
        c.change_approvers
            .as_ref()
            .map_or(Value::Null, crate::approvers::Approvers::describe),
    );
    put(
        "auditRedaction",
        json!(match c.audit_redaction {
            crate::redaction::Redaction::None => "none",
            crate::redaction::Redaction::Hipaa => meshguard_common::ephi::PROFILE,
        }),
    );
    put("witnesses", json!(c.audit_witnesses.len()));
    // The witnesses' verifier keys (public): evidence checks the cosignatures it carries
    // against the keys the log says were configured, not against keys the exporter names.
    put("witnessKeys", json!(c.audit_witnesses));
    put("witnessQuorum", json!(c.audit_witness_quorum));
    put("siem", json!(c.siem.is_some()));
    AuditEntry {
        id: crate::ids::new_time_ordered_id("aud"),
        timestamp: crate::clock::now_rfc3339(),
        event: EVENT.to_owned(),
        action: "system:configuration".to_owned(),
        reason: Some(why.to_owned()),
        trace_id: crate::ids::new_id("trace"),
        mode: c.mode.as_str().to_owned(),
        meta,
        // No agent, no decision: a record of the gateway's own state.
        ..AuditEntry::default()
    }
}

/// Records the configuration in force, durably; a gateway that cannot is not ready.
pub(crate) async fn record(state: &AppState, why: &str) -> anyhow::Result<u64> {
    state.audit.append(entry(state, why)).await.map_err(|e| {
        anyhow::anyhow!("cannot record the gateway's configuration in the audit log: {e}")
    })
}
