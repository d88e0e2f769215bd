//! `POST /api/v1/governance/batch`: many actions, one policy snapshot, one answer.

use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{RawBody, parse_json};
use super::proxy::{authenticate, client_limit, client_limit_hit, too_many, unauthorized};
use crate::auth::{tokens_equal, trace_id};
use crate::error::ApiError;
use std::sync::Arc;

use crate::governance::{Ask, Verdict, agent_rate_limit, breaker, decide};
use crate::policy::PolicySet;
use crate::state::AppState;
use crate::store::AgentRecord;

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

pub(crate) async fn batch(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    client_cert: Option<axum::Extension<crate::tls::ClientCert>>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let trace = trace_id(&headers);
    let req: BatchRequest = parse_json(&bytes)?;
    check_actions(&req.actions)?;
    // What a refusal before any decision records: the batch's first action, nothing more.
    let first = Ask {
        resource: None,
        context: None,
        delegated_by: Vec::new(),
        ..ask_for(&req.actions[0], &trace)
    };
    // The client's limit counts every decision: the first here, before anything else as on
    // /proxy/check, and each further action in `decide_each`.
    if let Some(r) = client_limit(&state, addr, &first).await {
        return Ok(r);
    }
    let agent = match batch_agent(&state, &headers, client_cert.is_some(), &req, &first).await? {
        Ok(agent) => agent,
        Err(refused) => return Ok(refused),
    };
    // One snapshot for the whole batch, even if policies change meanwhile.
    let snapshot = state.policies.snapshot();
    let (mut results, queued) =
        decide_each(&state, addr, &snapshot, &agent, &req.actions, &trace).await;
    if let Some(limited) = results
        .iter()
        .all(|(_, v)| v.rate_limited.is_some())
        .then(|| results[0].1.rate_limited.clone())
        .flatten()
    {
        return Ok(too_many(&limited, &trace));
    }
    let tripped = record_each(&state, &agent, &mut results, queued).await;
    let mode = state.config.mode;
    Ok(answer(results, tripped, started, &trace, &snapshot, mode))
}

/// A batch carries 1 to `MAX_ACTIONS` actions, each named.
fn check_actions(actions: &[BatchAction]) -> Result<(), ApiError> {
    if actions.is_empty() || actions.len() > MAX_ACTIONS {
        return Err(ApiError::field(
            "actions",
            format!("expected 1 to {MAX_ACTIONS} actions"),
        ));
    }
    if let Some(i) = actions.iter().position(|a| a.action.trim().is_empty()) {
        return Err(ApiError::field(
            &format!("actions[{i}].action"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// The decision asked by one action of the batch.
fn ask_for(action: &BatchAction, trace: &str) -> Ask {
    Ask {
        action: action.action.clone(),
        resource: action.resource.clone(),
        method: Some("POST".to_owned()),
        path: Some("/api/v1/governance/batch".to_owned()),
        context: action.context.clone(),
        trace_id: trace.to_owned(),
        delegated_by: action
            .delegated_by
            .clone()
            .map(Chain::into_vec)
            .unwrap_or_default(),
        delegators_ok: Ok(()),
        narrowed: None,
    }
}

/// The agent the batch is decided for: the `agentId` named with the admin token (and its
/// client certificate when the site requires one), or the agent whose token was sent. A token
/// that does not authenticate is answered, and recorded, as on every decision route.
async fn batch_agent(
    state: &AppState,
    headers: &HeaderMap,
    has_client_cert: bool,
    req: &BatchRequest,
    first: &Ask,
) -> Result<Result<Arc<AgentRecord>, Response>, ApiError> {
    let admin = headers
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| tokens_equal(t, &state.config.admin_token));
    if !admin {
        return Ok(match authenticate(state, headers).await? {
            Ok(a) => Ok(a),
            Err(refused) => Err(unauthorized(state, first, refused).await),
        });
    }
    if state.config.admin_client_ca.is_some() && !has_client_cert {
        return Err(ApiError::unauthorized(
            "a batch sent with the admin token requires a client certificate issued by the \
             site's admin CA (ADMIN_CLIENT_CA_FILE)",
        ));
    }
    let id = req.agent_id.clone().ok_or_else(|| {
        ApiError::field(
            "agentId",
            "required when the batch is sent with the admin token",
        )
    })?;
    match state.db.active_agent(&id).await? {
        Some(a) => Ok(Ok(a)),
        None => Err(ApiError::not_found("agent", &id)),
    }
}

/// One action's verdict, under the action's name.
type Decided = (String, Verdict);
/// A decided action's entry handed to the writer: its index, the queued entry, its alert and
/// the ask (for the breaker).
type Pending = (
    usize,
    Result<crate::audit::Queued, crate::audit::AuditError>,
    Option<crate::alerts::Alert>,
    Ask,
);

/// Decides every action against the one snapshot and queues each decision's entry.
async fn decide_each(
    state: &AppState,
    addr: std::net::SocketAddr,
    snapshot: &PolicySet,
    agent: &AgentRecord,
    actions: &[BatchAction],
    trace: &str,
) -> (Vec<Decided>, Vec<Pending>) {
    let mode = state.config.mode;
    let mut results = Vec::with_capacity(actions.len());
    let mut queued = Vec::with_capacity(actions.len());
    for (i, a) in actions.iter().enumerate() {
        let mut ask = ask_for(a, trace);
        // Each action is a decision, and each counts against both rate limits; one over a
        // limit is a recorded refusal, answered as a deny.
        if i > 0
            && let Some(limited) = client_limit_hit(state, addr, &ask).await
        {
            results.push((a.action.clone(), limited));
            continue;
        }
        if let Some(limited) = agent_rate_limit(state, snapshot, agent, &ask).await {
            results.push((a.action.clone(), limited));
            continue;
        }
        if !ask.delegated_by.is_empty() {
            ask.delegators_ok =
                crate::governance::check_delegators(state, agent, &ask.delegated_by).await;
        }
        let (verdict, entry) = decide(mode, snapshot, agent, &ask);
        let alert = crate::alerts::Alerts::for_entry(&entry);
        // The batch decides its next items before it waits: a lead held meanwhile would hold
        // every other request's entry back.
        let entry = state
            .audit
            .queue(entry)
            .map(crate::audit::Queued::lead_elsewhere);
        queued.push((i, entry, alert, ask));
        results.push((a.action.clone(), verdict));
    }
    (results, queued)
}

/// Every row is durable before the answer, and says what the answer says: an item whose row
/// is not durable within the breaker is withdrawn and answered, and recorded, by the breaker
/// (enforce fails closed); an item the writer already holds is answered as decided. Returns
/// which items the breaker answered.
async fn record_each(
    state: &AppState,
    agent: &AgentRecord,
    results: &mut [Decided],
    queued: Vec<Pending>,
) -> Vec<bool> {
    let deadline = tokio::time::Instant::now() + state.config.circuit_breaker;
    let mut tripped = vec![false; results.len()];
    for (i, queued, alert, ask) in queued {
        let verdict = &mut results[i].1;
        match crate::governance::record_by(state, queued, deadline).await {
            Ok(seq) => {
                if let Some(alert) = alert {
                    state.alerts.raise(alert);
                }
                verdict.audit_seq = Some(seq);
                state
                    .metrics
                    .decision(verdict.allowed, verdict.would_deny, verdict.latency, true);
            }
            Err(why) => {
                tripped[i] = true;
                *verdict = breaker(state, agent, &ask, verdict.clone(), &why, Instant::now()).await;
            }
        }
    }
    tripped
}

/// The batch's answer: one item per action, in order, and `Retry-After` when one was limited.
fn answer(
    results: Vec<Decided>,
    tripped: Vec<bool>,
    started: Instant,
    trace: &str,
    snapshot: &PolicySet,
    mode: crate::config::Mode,
) -> Response {
    let retry_after = results
        .iter()
        .find_map(|(_, v)| v.rate_limited.as_ref().map(|l| l.retry_after));
    let all_allowed = results.iter().all(|(_, v)| v.allowed);
    let items: Vec<Value> = results
        .into_iter()
        .zip(tripped)
        .map(|((action, v), tripped)| item(action, &v, tripped))
        .collect();
    let mut response = Json(json!({
        "results": items,
        "allAllowed": all_allowed,
        "totalLatencyMs": (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        "traceId": trace,
        "snapshot": snapshot.version,
        "mode": mode.as_str(),
    }))
    .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    response
}

/// One action's item in the answer.
fn item(action: String, v: &Verdict, tripped: bool) -> Value {
    let mut item = json!({
        "action": action,
        "decision": if v.allowed { "allow" } else { "deny" },
        "latencyMs": (v.latency.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    });
    if !v.allowed || v.would_deny || tripped {
        item["reason"] = json!(v.reason);
    }
    if v.would_deny {
        item["wouldDeny"] = json!(true);
    }
    if let Some(limited) = &v.rate_limited {
        item["rateLimited"] = json!(true);
        item["retryAfter"] = json!(limited.retry_after);
    }
    if let Some(p) = &v.policy {
        item["policy"] = json!(p);
    }
    if let Some(r) = &v.rule {
        item["rule"] = json!(r);
    }
    item
}
