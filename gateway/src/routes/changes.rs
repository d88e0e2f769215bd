//! `GET /admin/changes`: the record of every admin write, and the helpers that build one.

use axum::Json;
use axum::extract::{Query, State};
use meshguard_api::ChangeList;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{Admin, ChangeMeta};
use crate::error::ApiError;
use crate::state::Db;
use crate::store::{ChangeDraft, ChangeFilter};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChangeQuery {
    kind: Option<String>,
    object_id: Option<String>,
    /// Only changes with a sequence number above this one, for paging and tailing.
    after: Option<i64>,
    limit: Option<usize>,
}

pub(super) async fn list(
    _: Admin,
    State(db): State<Db>,
    Query(q): Query<ChangeQuery>,
) -> Result<Json<ChangeList>, ApiError> {
    if let Some(kind) = &q.kind
        && !["agent", "policy", "alert_channel"].contains(&kind.as_str())
    {
        return Err(ApiError::field(
            "kind",
            "expected agent, policy or alert_channel",
        ));
    }
    let filter = ChangeFilter {
        kind: q.kind,
        object_id: q.object_id,
        after_seq: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let changes = db.run(move |s| s.list_changes(&filter)).await?;
    Ok(Json(ChangeList { changes }))
}

/// `sha256:<hex>` of some bytes.
pub(crate) fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(crate) fn digest_json(v: &Value) -> String {
    digest(&serde_json::to_vec(v).expect("JSON values serialize"))
}

/// What one admin write did, ready for the store.
pub(crate) struct Draft<'a> {
    pub(crate) kind: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) object_id: &'a str,
    pub(crate) object_name: Option<&'a str>,
    /// Redacted views of the object before and after.
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
    pub(crate) old_digest: Option<String>,
    pub(crate) new_digest: Option<String>,
    /// Fields changed that the views do not show (secrets).
    pub(crate) hidden_fields: Vec<&'static str>,
}

impl Draft<'_> {
    pub(crate) fn build(self, meta: &ChangeMeta) -> ChangeDraft {
        let mut fields = changed_fields(self.before.as_ref(), self.after.as_ref());
        fields.extend(self.hidden_fields.iter().map(|f| (*f).to_owned()));
        fields.sort();
        fields.dedup();
        ChangeDraft {
            id: crate::ids::new_id("chg"),
            timestamp: crate::clock::now_rfc3339(),
            kind: self.kind,
            object_id: self.object_id.to_owned(),
            object_name: self.object_name.map(str::to_owned),
            operation: self.operation,
            fields,
            before: self.before,
            after: self.after,
            old_digest: self.old_digest,
            new_digest: self.new_digest,
            approver: meta.approver.clone(),
            change_ticket: meta.change_ticket.clone(),
            trace_id: Some(meta.trace_id.clone()),
            idempotency_key: (self.operation == "create")
                .then(|| meta.idempotency_key.clone())
                .flatten(),
        }
    }
}

/// The id of the object an earlier create with this request's `Idempotency-Key` made, if any.
/// A key that made another kind of object is a conflict, naming it.
pub(crate) async fn replayed(
    db: &Db,
    meta: &ChangeMeta,
    kind: &'static str,
) -> Result<Option<String>, ApiError> {
    let Some(key) = meta.idempotency_key.clone() else {
        return Ok(None);
    };
    match db.run(move |s| s.created_with_key(&key)).await? {
        None => Ok(None),
        Some((k, id)) if k == kind => {
            tracing::info!(kind, id = %id, "a create sent again with its Idempotency-Key: answering the object it made");
            Ok(Some(id))
        }
        Some((k, id)) => Err(ApiError::conflict(format!(
            "this Idempotency-Key made {k} {id}, not a new {kind}; send a new key for a new object"
        ))),
    }
}

/// `saved` as it went, unless it failed and the request's key shows an earlier create of the
/// same kind made the object meanwhile (two retries at once): then that object's id.
pub(crate) async fn or_replayed(
    db: &Db,
    meta: &ChangeMeta,
    kind: &'static str,
    saved: Result<(), ApiError>,
) -> Result<Option<String>, ApiError> {
    match saved {
        Ok(()) => Ok(None),
        Err(e) if meta.idempotency_key.is_some() && !e.is_outcome_unknown() => {
            match replayed(db, meta, kind).await? {
                Some(id) => Ok(Some(id)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

const BOOKKEEPING: &[&str] = &["updatedAt", "revision", "digest"];

fn changed_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !BOOKKEEPING.contains(&k.as_str()) && b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}
