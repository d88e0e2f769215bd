//! Redaction profiles applied to an audit entry before it is written (and to an alert before it
//! is sent): `AUDIT_REDACTION=hipaa` logs the agent's payload as metadata only (each context
//! value becomes its type and size) and replaces the ePHI identifiers `meshguard_common::ephi`
//! recognises in the action, resource, path and reason with `[REDACTED:<kind>]`. The entry
//! records the profile (`meta.redaction`), so evidence shows which entries it covered.

use meshguard_api::AuditEntry;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Redaction {
    #[default]
    None,
    Hipaa,
}

/// Keys of `meta` the gateway itself writes (structure, not the agent's payload).
const OWN_KEYS: &[&str] = &[
    "narrowedTo",
    "delegatedBy",
    "aggregate",
    "client",
    "allowlistVersion",
];

impl Redaction {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Self::None),
            "hipaa" => Ok(Self::Hipaa),
            other => Err(format!(
                "AUDIT_REDACTION is {other:?}; use none or hipaa (metadata-only payloads, ePHI identifiers redacted)"
            )),
        }
    }

    pub(crate) fn apply(self, entry: &mut AuditEntry) {
        if self == Self::None {
            return;
        }
        for v in [&mut entry.resource, &mut entry.path, &mut entry.reason]
            .into_iter()
            .flatten()
        {
            redact_string(v);
        }
        redact_string(&mut entry.action);
        let meta = std::mem::take(&mut entry.meta);
        let mut out = Map::new();
        for (k, mut v) in meta {
            if OWN_KEYS.contains(&k.as_str()) {
                redact_value(&mut v);
                out.insert(k, v);
            } else {
                out.insert(k, shape(&v));
            }
        }
        out.insert(
            "redaction".to_owned(),
            Value::from(meshguard_common::ephi::PROFILE),
        );
        entry.meta = out;
    }

    /// Free text (an alert's title or message) under the profile.
    pub(crate) fn text(self, s: &mut String) {
        if self != Self::None {
            redact_string(s);
        }
    }
}

fn redact_string(s: &mut String) {
    if let std::borrow::Cow::Owned(r) = meshguard_common::ephi::redact(s) {
        *s = r;
    }
}

fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => redact_string(s),
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Object(o) => o.values_mut().for_each(redact_value),
        _ => {}
    }
}

/// What a payload value was, without what it said.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!({"type": "null"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(s) => json!({"type": "string", "length": s.chars().count()}),
        Value::Array(a) => json!({"type": "array", "length": a.len()}),
        Value::Object(o) => json!({"type": "object", "keys": o.len()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hipaa_keeps_metadata_and_redacts_identifiers() {
        let mut e: AuditEntry = serde_json::from_value(json!({
            "id": "aud_1", "timestamp": "t", "event": "decision", "action": "read:patients/123-45-6789",
            "resource": "ehr/jane.doe@clinic.example", "decision": "deny", "outcome": "deny",
            "reason": "No rule allows read:patients/123-45-6789", "traceId": "t", "mode": "enforce",
            "snapshot": 1,
            "meta": {"patient": {"name": "Jane Doe", "dob": "1984-07-02"}, "note": "MRN 0048213",
                     "narrowedTo": {"action": "read:patients/123-45-6789"}}
        }))
        .unwrap();
        Redaction::Hipaa.apply(&mut e);
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            !text.contains("Jane") && !text.contains("6789") && !text.contains("0048213"),
            "{text}"
        );
        assert_eq!(e.action, "read:patients/[REDACTED:ssn]");
        assert_eq!(e.meta["patient"], json!({"type": "object", "keys": 2}));
        assert_eq!(e.meta["note"], json!({"type": "string", "length": 11}));
        assert_eq!(
            e.meta["narrowedTo"]["action"],
            "read:patients/[REDACTED:ssn]"
        );
        assert_eq!(e.meta["redaction"], "hipaa/v1");
        assert_eq!(meshguard_common::ephi::scan(&text), None);
    }

    #[test]
    fn none_changes_nothing_and_unknown_profiles_are_refused() {
        let mut e: AuditEntry = serde_json::from_value(json!({
            "id": "aud_1", "timestamp": "t", "event": "decision", "action": "read:123-45-6789",
            "decision": "allow", "outcome": "allow", "traceId": "t", "mode": "enforce", "snapshot": 1,
            "meta": {"x": "y"}
        }))
        .unwrap();
        let before = serde_json::to_string(&e).unwrap();
        Redaction::None.apply(&mut e);
        assert_eq!(serde_json::to_string(&e).unwrap(), before);
        assert!(
            Redaction::parse("gdpr")
                .unwrap_err()
                .contains("none or hipaa")
        );
    }
}
