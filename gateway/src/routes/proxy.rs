//! `GET /proxy/check`: the decision endpoint the MeshGuard SDKs call before acting.
//!
//! The token proves identity; tier and tags come from the store, so a revoke or a PATCH takes
//! effect on the next call. Decision audit rows, `/proxy/*` forwarding, rate limits and alerting
//! belong to the data-plane work and are not here yet.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_api::TrustTier;
use serde_json::{Map, Value, json};

use crate::auth::{bearer, trace_id};
use crate::config::Mode;
use crate::error::ApiError;
use crate::policy::{EvalRequest, Outcome, evaluate};
use crate::state::AppState;
use crate::store::AgentRecord;

fn invalid_token() -> ApiError {
    ApiError::unauthorized("Invalid or expired token")
}

/// The active agent a bearer token belongs to, or 401.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<AgentRecord, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::unauthorized("Missing agent token: send Authorization: Bearer <agent token>")
    })?;
    let claims = state.inner.tokens.verify(token).map_err(|e| {
        tracing::info!(reason = %e, "agent token refused");
        invalid_token()
    })?;
    let id = claims.sub.clone();
    let agent = state.db(move |s| s.get_agent(&id)).await?;
    match agent {
        Some(a) if a.revoked_at.is_none() && a.token_version == claims.ver => Ok(a),
        Some(a) if a.revoked_at.is_some() => {
            tracing::info!(agent = %a.id, "token of a revoked agent refused");
            Err(invalid_token())
        }
        Some(a) => {
            tracing::info!(agent = %a.id, "superseded token refused (the token was re-issued)");
            Err(invalid_token())
        }
        None => {
            tracing::info!(agent = %claims.sub, "token for an unknown agent refused");
            Err(invalid_token())
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::field(name, "must be printable ASCII text")),
    }
}

pub(super) async fn check(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let trace = trace_id(&headers);
    let agent = authenticate(&state, &headers).await?;
    let action = header(&headers, "x-meshguard-action")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                "X-MeshGuard-Action",
                "header is required, e.g. X-MeshGuard-Action: read:contacts",
            )
        })?;
    let resource = header(&headers, "x-meshguard-resource")?.filter(|r| !r.is_empty());
    let context: Option<Map<String, Value>> = match header(&headers, "x-meshguard-meta")? {
        None | Some("") => None,
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|_| ApiError::field("X-MeshGuard-Meta", "must be a JSON object"))?,
        ),
    };
    let mode = state.config().mode;
    let mut body = json!({
        "action": action,
        "agentId": agent.id,
        "traceId": trace,
        "mode": mode.as_str(),
    });
    let (status, decision_header, policy) = if mode == Mode::Bypass {
        body["allowed"] = json!(true);
        body["decision"] = json!("allow");
        (StatusCode::OK, "allow", None)
    } else {
        let tier = TrustTier::parse(&agent.trust_tier).unwrap_or(TrustTier::Unverified);
        let snapshot = state.snapshot();
        let d = evaluate(
            &snapshot,
            &EvalRequest {
                agent_id: &agent.id,
                agent_name: &agent.name,
                tier,
                tags: &agent.tags,
                action,
                resource,
                context: context.as_ref(),
            },
        );
        if let Some(p) = &d.policy {
            body["policy"] = json!(p);
        }
        if let Some(r) = &d.rule {
            body["rule"] = json!(r);
        }
        body["reason"] = json!(d.reason);
        match (d.outcome, mode) {
            (Outcome::Allow, _) => {
                body["allowed"] = json!(true);
                body["decision"] = json!("allow");
                (StatusCode::OK, "allow", d.policy)
            }
            (Outcome::Deny, Mode::Audit) => {
                body["allowed"] = json!(true);
                body["decision"] = json!("allow");
                body["wouldDeny"] = json!(true);
                (StatusCode::OK, "deny", d.policy)
            }
            (Outcome::Deny, _) => {
                body["allowed"] = json!(false);
                body["decision"] = json!("deny");
                body["error"] = json!("Forbidden");
                body["message"] = json!(d.reason);
                body["trace_id"] = json!(trace);
                (StatusCode::FORBIDDEN, "deny", d.policy)
            }
        }
    };
    let mut response = (status, Json(body)).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-meshguard-decision", decision_header);
    set("x-meshguard-trace-id", &trace);
    set("x-meshguard-agent-id", &agent.id);
    if let Some(p) = policy {
        set("x-meshguard-policy", &p);
    }
    Ok(response)
}
