//! Every entry fits its frame: an entry bundle frames each entry with a 2-byte length, so an
//! entry is bounded before it is written, never refused for its size.
//!
//! The rule, applied to every entry this gateway writes (decisions, refusals, aggregates,
//! alerts, egress):
//! - a string field whose JSON text is over [`FIELD_MAX`] bytes is cut to fit, ending in `…`;
//! - the context (`meta`) is kept as it is when its JSON text is at most [`META_MAX`] bytes;
//!   otherwise each value over [`FIELD_MAX`] is replaced by its JSON text, cut; if that is not
//!   enough (or the context has more than [`META_KEYS`] keys, or a key over [`KEY_MAX`] bytes),
//!   the context keeps only the gateway's own small keys and the rest is dropped;
//! - each cut is named in `truncated` with the full value's length and SHA-256.
//!
//! The worst case after this is under 60 KiB (see the test), so an entry always fits.

use std::collections::BTreeMap;

use meshguard_api::{AuditEntry, Truncated};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The most bytes of JSON text a string field keeps.
pub(crate) const FIELD_MAX: usize = 2048;
/// The most bytes of JSON text the context keeps whole.
pub(crate) const META_MAX: usize = 8 * 1024;
/// The most keys of a context whose values are cut one by one.
const META_KEYS: usize = 32;
/// The longest context key kept.
const KEY_MAX: usize = 128;
/// Context keys the gateway itself writes, kept when the caller's context is dropped.
const OWN_KEYS: &[&str] = &["aggregate", "narrowedTo", "delegatedBy", "agentIdHint"];
/// The mark at the end of a cut value.
const MARK: &str = "…";

/// Bounds `entry` as the module says. Returns whether anything was cut.
pub(crate) fn bound(entry: &mut AuditEntry) -> bool {
    let mut cuts = BTreeMap::new();
    for (name, value) in string_fields(entry) {
        if let Some(cut) = cut_string(value, FIELD_MAX) {
            cuts.insert(name.to_owned(), cut);
        }
    }
    bound_meta(&mut entry.meta, &mut cuts);
    let changed = !cuts.is_empty();
    entry.truncated.extend(cuts);
    changed
}

/// Every string field of an entry, by its JSON name.
fn string_fields(e: &mut AuditEntry) -> Vec<(&'static str, &mut String)> {
    let AuditEntry {
        id,
        timestamp,
        event,
        agent_id,
        agent_name,
        trust_tier,
        action,
        resource,
        method,
        path,
        decision,
        outcome,
        policy,
        policy_name,
        rule,
        reason,
        trace_id,
        mode,
        snapshot: _,
        meta: _,
        would_deny: _,
        truncated: _,
    } = e;
    let mut fields = vec![
        ("id", id),
        ("timestamp", timestamp),
        ("event", event),
        ("action", action),
        ("decision", decision),
        ("outcome", outcome),
        ("traceId", trace_id),
        ("mode", mode),
    ];
    for (name, value) in [
        ("agentId", agent_id),
        ("agentName", agent_name),
        ("trustTier", trust_tier),
        ("resource", resource),
        ("method", method),
        ("path", path),
        ("policy", policy),
        ("policyName", policy_name),
        ("rule", rule),
        ("reason", reason),
    ] {
        if let Some(v) = value.as_mut() {
            fields.push((name, v));
        }
    }
    fields
}

fn digest(text: &str) -> Truncated {
    Truncated {
        length: text.len() as u64,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    }
}

/// The bytes `c` takes inside a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Cuts `value` so that its JSON text is at most `max` bytes, ending in the mark; returns what
/// it held if it was cut.
pub(crate) fn cut_string(value: &mut String, max: usize) -> Option<Truncated> {
    // Fast path: no character takes more than 6 bytes of JSON text.
    if value.len().saturating_mul(6) <= max || value.chars().map(json_len).sum::<usize>() <= max {
        return None;
    }
    let record = digest(value);
    let budget = max - MARK.len();
    let mut used = 0;
    let end = value
        .char_indices()
        .find(|(_, c)| {
            used += json_len(*c);
            used > budget
        })
        .map_or(value.len(), |(i, _)| i);
    value.truncate(end);
    value.push_str(MARK);
    Some(record)
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

/// Bounds the context as the module says, adding what it cut to `cuts`.
fn bound_meta(meta: &mut Map<String, Value>, cuts: &mut BTreeMap<String, Truncated>) {
    if meta.is_empty() {
        return;
    }
    let whole = json_text(&Value::Object(meta.clone()));
    if whole.len() <= META_MAX {
        return;
    }
    let cut_one_by_one = meta.len() <= META_KEYS && meta.keys().all(|k| k.len() <= KEY_MAX);
    if cut_one_by_one {
        let mut own = BTreeMap::new();
        for (key, value) in meta.iter_mut() {
            let mut text = json_text(value);
            if let Some(cut) = cut_string(&mut text, FIELD_MAX) {
                own.insert(format!("meta.{key}"), cut);
                *value = Value::String(text);
            }
        }
        if json_text(&Value::Object(meta.clone())).len() <= META_MAX {
            cuts.extend(own);
            return;
        }
    }
    // Too much even so: only the gateway's own small keys stay.
    let kept: Map<String, Value> = OWN_KEYS
        .iter()
        .filter_map(|k| meta.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .filter(|(_, v)| json_text(v).len() <= FIELD_MAX)
        .collect();
    *meta = kept;
    cuts.insert("meta".to_owned(), digest(&whole));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile(field: String) -> AuditEntry {
        let mut meta = Map::new();
        for i in 0..META_KEYS {
            meta.insert(format!("{i:0>128}"), Value::String(field.clone()));
        }
        AuditEntry {
            id: field.clone(),
            timestamp: field.clone(),
            event: field.clone(),
            agent_id: Some(field.clone()),
            agent_name: Some(field.clone()),
            trust_tier: Some(field.clone()),
            action: field.clone(),
            resource: Some(field.clone()),
            method: Some(field.clone()),
            path: Some(field.clone()),
            decision: field.clone(),
            outcome: field.clone(),
            policy: Some(field.clone()),
            policy_name: Some(field.clone()),
            rule: Some(field.clone()),
            reason: Some(field.clone()),
            trace_id: field.clone(),
            mode: field,
            snapshot: u64::MAX,
            meta,
            would_deny: true,
            truncated: BTreeMap::new(),
        }
    }

    #[test]
    fn the_worst_entry_fits_its_frame_once_bounded() {
        // Every field as long as a header can be, in the characters that cost the most.
        for field in [
            "\u{1}".repeat(70_000),
            "\"".repeat(70_000),
            "€".repeat(30_000),
            "a".repeat(70_000),
            format!("{}{}", "a".repeat(2046), "\u{1}".repeat(10)),
        ] {
            let mut e = hostile(field);
            assert!(bound(&mut e));
            let body = super::super::canonical_entry(&e);
            assert!(
                body.len() < 60 * 1024,
                "{} bytes after bounding",
                body.len()
            );
            assert!(e.truncated.contains_key("path"));
        }
    }

    #[test]
    fn a_cut_names_the_full_value_and_keeps_a_prefix() {
        let full = format!("delete:{}", "x".repeat(70_000));
        let mut e = AuditEntry {
            action: full.clone(),
            ..AuditEntry::default()
        };
        assert!(bound(&mut e));
        assert!(e.action.starts_with("delete:xxx") && e.action.ends_with('…'));
        assert!(e.action.len() <= FIELD_MAX);
        let cut = &e.truncated["action"];
        assert_eq!(cut.length, full.len() as u64);
        assert_eq!(cut.sha256, hex::encode(Sha256::digest(full.as_bytes())));
        // A field that fits is left alone, and so is an entry with nothing long.
        let mut small = AuditEntry {
            action: "read:x".into(),
            ..AuditEntry::default()
        };
        assert!(!bound(&mut small));
        assert!(small.truncated.is_empty());
    }

    #[test]
    fn a_large_context_is_cut_by_value_then_dropped_keeping_the_gateways_keys() {
        let mut e = AuditEntry::default();
        e.meta
            .insert("user".into(), Value::String("u".repeat(20_000)));
        e.meta.insert("small".into(), Value::from(1));
        assert!(bound(&mut e));
        assert_eq!(e.meta["small"], 1);
        assert!(e.truncated.contains_key("meta.user"));

        let mut e = AuditEntry::default();
        for i in 0..1000 {
            e.meta.insert(format!("k{i}"), Value::from("v".repeat(40)));
        }
        e.meta
            .insert("aggregate".into(), serde_json::json!({"count": 7}));
        assert!(bound(&mut e));
        assert_eq!(e.meta.len(), 1);
        assert_eq!(e.meta["aggregate"]["count"], 7);
        assert!(e.truncated.contains_key("meta"));
    }
}
