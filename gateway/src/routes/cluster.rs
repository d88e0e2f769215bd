//! `/admin/cluster/audit`: the central audit index of the gateways sharing a PostgreSQL control
//! plane, and its verification against every origin's signed checkpoints.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::bound;
use crate::auth::Admin;
use crate::cluster::ControlPlane;
use crate::error::ApiError;
use crate::store::CentralQuery;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CentralParams {
    limit: Option<usize>,
    origin: Option<String>,
    #[serde(alias = "agent_id")]
    agent_id: Option<String>,
    agent: Option<String>,
    decision: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Entries of every gateway, newest first, each with its origin and place in that origin's log.
pub(super) async fn list(
    _: Admin,
    State(control_plane): State<Arc<dyn ControlPlane>>,
    Query(q): Query<CentralParams>,
) -> Result<Json<Value>, ApiError> {
    let index = control_plane.central_index()?;
    if let Some(d) = &q.decision
        && d != "allow"
        && d != "deny"
    {
        return Err(ApiError::field("decision", "expected allow or deny"));
    }
    super::audit::check_time("from", &q.from)?;
    super::audit::check_time("to", &q.to)?;
    let query = CentralQuery {
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
        origin: q.origin,
        agent: q.agent_id.or(q.agent),
        decision: q.decision,
        from: q.from.as_deref().map(|d| bound(d, false)),
        to: q.to.as_deref().map(|d| bound(d, true)),
    };
    let rows = tokio::task::spawn_blocking(move || index.list(&query))
        .await
        .map_err(ApiError::internal)??;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|(origin, seq, body)| {
            let mut entry: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
            if let Some(map) = entry.as_object_mut() {
                map.insert("origin".into(), json!(origin));
                map.insert("seq".into(), json!(seq));
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

/// Every origin's central copy checked against its latest signed checkpoint.
pub(super) async fn verify(
    _: Admin,
    State(control_plane): State<Arc<dyn ControlPlane>>,
) -> Result<Json<Value>, ApiError> {
    let index = control_plane.central_index()?;
    let origins = tokio::task::spawn_blocking(move || index.verify())
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({
        "valid": !origins.is_empty() && origins.iter().all(|o| o.valid),
        "origins": origins,
    })))
}
