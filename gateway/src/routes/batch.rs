//! `POST /api/v1/governance/batch`: many actions, one policy snapshot, one answer.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{RawBody, parse_json};
use super::proxy::{authenticate, unauthorized};
use crate::auth::{tokens_equal, trace_id};
use crate::error::ApiError;
use crate::governance::{Ask, CIRCUIT_BREAKER, decide};
use crate::state::AppState;

/// Actions one batch may carry.
const MAX_ACTIONS: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchRequest {
    /// Required with the admin token; ignored (the token says who) with an agent token.
    #[serde(default, alias = "agent_id")]
    agent_id: Option<String>,
    actions: Vec<BatchAction>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchAction {
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// The delegation chain, original delegator first: one id or a list.
    #[serde(default, alias = "delegated_by")]
    delegated_by: Option<Chain>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Chain {
    One(String),
    Many(Vec<String>),
}

impl Chain {
    fn into_vec(self) -> Vec<String> {
        match self {
            Chain::One(s) => crate::governance::parse_chain(&s),
            Chain::Many(v) => v.into_iter().filter(|s| !s.trim().is_empty()).collect(),
        }
    }
}

pub(super) async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let trace = trace_id(&headers);
    let req: BatchRequest = parse_json(&bytes)?;
    if req.actions.is_empty() || req.actions.len() > MAX_ACTIONS {
        return Err(ApiError::field(
            "actions",
            format!("expected 1 to {MAX_ACTIONS} actions"),
        ));
    }
    if let Some(i) = req.actions.iter().position(|a| a.action.trim().is_empty()) {
        return Err(ApiError::field(
            &format!("actions[{i}].action"),
            "must not be empty",
        ));
    }
    let first = Ask {
        action: req.actions[0].action.clone(),
        resource: None,
        method: Some("POST".to_owned()),
        path: Some("/api/v1/governance/batch".to_owned()),
        context: None,
        trace_id: trace.clone(),
        delegated_by: Vec::new(),
        delegators_ok: Ok(()),
        narrowed: None,
    };
    let admin = headers
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| tokens_equal(t, &state.config().admin_token));
    let agent = if admin {
        let id = req.agent_id.clone().ok_or_else(|| {
            ApiError::field(
                "agentId",
                "required when the batch is sent with the admin token",
            )
        })?;
        match state.active_agent(&id).await? {
            Some(a) => a,
            None => return Err(ApiError::not_found("agent", &id)),
        }
    } else {
        match authenticate(&state, &headers).await? {
            Ok(a) => a,
            Err(refused) => return Ok(unauthorized(&state, &first, refused).await),
        }
    };

    // One snapshot for the whole batch, even if policies change meanwhile.
    let snapshot = state.snapshot();
    let mode = state.config().mode;
    let mut results = Vec::with_capacity(req.actions.len());
    let mut waits = Vec::with_capacity(req.actions.len());
    for a in &req.actions {
        let mut ask = Ask {
            action: a.action.clone(),
            resource: a.resource.clone(),
            method: Some("POST".to_owned()),
            path: Some("/api/v1/governance/batch".to_owned()),
            context: a.context.clone(),
            trace_id: trace.clone(),
            delegated_by: a
                .delegated_by
                .clone()
                .map(|d| d.into_vec())
                .unwrap_or_default(),
            delegators_ok: Ok(()),
            narrowed: None,
        };
        if !ask.delegated_by.is_empty() {
            ask.delegators_ok =
                crate::governance::check_delegators(&state, &agent, &ask.delegated_by).await;
        }
        let (verdict, entry) = decide(mode, &snapshot, &agent, &ask);
        if let Some(alert) = crate::alerts::Alerts::for_entry(&entry) {
            state.inner.alerts.raise(alert);
        }
        let audit = state.inner.audit.clone();
        waits.push(tokio::spawn(async move { audit.append(entry).await }));
        results.push((a.action.clone(), verdict));
    }
    // Every row must be durable before the answer; past the breaker, enforce mode fails closed.
    let recorded = tokio::time::timeout(CIRCUIT_BREAKER, async {
        let mut ok = true;
        for w in waits {
            ok &= matches!(w.await, Ok(Ok(_)));
        }
        ok
    })
    .await
    .unwrap_or(false);
    let fail_closed = !recorded && mode == crate::config::Mode::Enforce;
    let mut all_allowed = true;
    let items: Vec<Value> = results
        .into_iter()
        .map(|(action, v)| {
            let allowed = v.allowed && !fail_closed;
            state.inner.metrics.decision(allowed, v.would_deny, v.latency, recorded);
            all_allowed &= allowed;
            let mut item = json!({
                "action": action,
                "decision": if allowed { "allow" } else { "deny" },
                "latencyMs": (v.latency.as_secs_f64() * 1_000_000.0).round() / 1000.0,
            });
            if fail_closed {
                item["reason"] = json!("the audit log did not confirm within the 100 ms circuit breaker; failing closed (enforce mode)");
            } else if !allowed || v.would_deny {
                item["reason"] = json!(v.reason);
            }
            if v.would_deny {
                item["wouldDeny"] = json!(true);
            }
            if let Some(p) = v.policy {
                item["policy"] = json!(p);
            }
            if let Some(r) = v.rule {
                item["rule"] = json!(r);
            }
            item
        })
        .collect();
    Ok(Json(json!({
        "results": items,
        "allAllowed": all_allowed,
        "totalLatencyMs": (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        "traceId": trace,
        "snapshot": snapshot.version,
        "mode": mode.as_str(),
    }))
    .into_response())
}
