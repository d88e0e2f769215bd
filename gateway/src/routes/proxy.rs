//! The data plane: `GET /proxy/check`, the decision endpoint the MeshGuard SDKs call before
//! acting. Every call is governed and audited (see `governance`); a call without a valid agent
//! token is a recorded bypass attempt.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::auth::{bearer, trace_id};
use crate::error::ApiError;
use crate::governance::{Ask, Verdict, govern, record_bypass_attempt};
use crate::policy::Outcome;
use crate::state::AppState;
use crate::store::AgentRecord;

/// Why a token was refused: shown to the caller only as "Invalid or expired token".
pub(crate) struct Refused {
    pub(crate) why: &'static str,
    pub(crate) claimed: Option<String>,
}

/// The active agent a bearer token belongs to.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Result<std::sync::Arc<AgentRecord>, Refused>, ApiError> {
    // A guardian sidecar's caller is its pod: the agent it was started for.
    if let Some(sc) = &state.sidecar {
        let agent = sc.agent();
        return Ok(if agent.revoked_at.is_none() {
            Ok(agent)
        } else {
            Err(Refused {
                why: "token of a revoked agent",
                claimed: Some(agent.id.clone()),
            })
        });
    }
    let Some(token) = bearer(headers) else {
        return Ok(Err(Refused {
            why: "no agent token",
            claimed: None,
        }));
    };
    let claims = match state.tokens.verify(token) {
        Ok(c) => c,
        Err(_) => {
            return Ok(Err(Refused {
                why: "invalid or expired agent token",
                claimed: None,
            }));
        }
    };
    let id = claims.sub.clone();
    let agent = state.db.agent(&id).await?;
    Ok(match agent {
        Some(a) if a.revoked_at.is_none() && a.token_version == claims.ver => Ok(a),
        Some(a) if a.revoked_at.is_some() => Err(Refused {
            why: "token of a revoked agent",
            claimed: Some(a.id.clone()),
        }),
        Some(a) => Err(Refused {
            why: "superseded token (re-issued since)",
            claimed: Some(a.id.clone()),
        }),
        None => Err(Refused {
            why: "token for an unknown agent",
            claimed: Some(claims.sub.clone()),
        }),
    })
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::field(name, "must be printable ASCII text")),
    }
}

/// The context a caller attached with `X-MeshGuard-Meta` (a JSON object), plus the agent id hint
/// some SDKs send, kept for the audit row.
pub(crate) fn context(headers: &HeaderMap) -> Result<Option<Map<String, Value>>, ApiError> {
    // Any UTF-8, not only visible ASCII: the Go SDK sends the JSON as it is (`{"user":"José"}`).
    let meta = match headers.get("x-meshguard-meta") {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v.as_bytes())
                .map_err(|_| ApiError::field("X-MeshGuard-Meta", "must be UTF-8 text"))?
                .trim(),
        ),
    };
    let mut ctx: Option<Map<String, Value>> = match meta {
        None | Some("") => None,
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|_| ApiError::field("X-MeshGuard-Meta", "must be a JSON object"))?,
        ),
    };
    if let Some(hint) = header(headers, "x-meshguard-agent-id")?.filter(|h| !h.is_empty()) {
        ctx.get_or_insert_with(Map::new)
            .insert("agentIdHint".to_owned(), Value::String(hint.to_owned()));
    }
    Ok(ctx)
}

/// The 403 body: the union of what MeshGuard's SDKs and HTTP docs read, never with nulls.
pub(crate) fn deny_body(v: &Verdict, action: &str, trace: &str) -> Value {
    let mut body = json!({
        "error": "Forbidden",
        "message": v.reason,
        "reason": v.reason,
        "action": action,
        "decision": "deny",
        "allowed": false,
        "mode": v.mode.as_str(),
        "traceId": trace,
        "trace_id": trace,
    });
    if let Some(p) = &v.policy {
        body["policy"] = json!(p);
    }
    if let Some(r) = &v.rule {
        body["rule"] = json!(r);
    }
    body
}

/// `X-MeshGuard-Decision`, `-Policy`, `-Trace-Id`, `-Agent-Id` on a response.
pub(crate) fn decision_headers(
    response: &mut Response,
    v: &Verdict,
    trace: &str,
    agent: Option<&str>,
) {
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(
        "x-meshguard-decision",
        if v.decision == Outcome::Deny {
            "deny"
        } else {
            "allow"
        },
    );
    set("x-meshguard-trace-id", trace);
    if let Some(a) = agent {
        set("x-meshguard-agent-id", a);
    }
    if let Some(p) = &v.policy {
        set("x-meshguard-policy", p);
    }
}

/// The 429 MeshGuard's HTTP docs show, with `Retry-After`.
pub(crate) fn too_many(limited: &crate::limits::Limited, trace: &str) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "error": "rate_limited",
            "message": "Rate limit exceeded",
            "retry_after": limited.retry_after,
            "limit": limited.limit,
            "traceId": trace,
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&limited.retry_after.to_string()) {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
    }
    r
}

/// `RATE_LIMIT_RPM` per client address, checked before anything else; a refusal is recorded.
pub(crate) async fn client_limit(
    state: &AppState,
    addr: std::net::SocketAddr,
    ask: &Ask,
) -> Option<Response> {
    let refused = client_limit_hit(state, addr, ask).await?;
    let limited = refused.rate_limited.expect("a rate-limit verdict");
    Some(too_many(&limited, &ask.trace_id))
}

/// Counts one decision against `RATE_LIMIT_RPM` for the client's address; over it, records
/// the refusal and returns its verdict.
pub(crate) async fn client_limit_hit(
    state: &AppState,
    addr: std::net::SocketAddr,
    ask: &Ask,
) -> Option<Verdict> {
    let rpm = state.config.rate_limit_rpm;
    if rpm == 0 {
        return None;
    }
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let limited = state
        .limiter
        .hit(format_args!("ip:{}", addr.ip()), Some(rpm), None, now)
        .err()?;
    let why = format!(
        "Rate limit exceeded ({}) for client {}",
        limited.limit,
        addr.ip()
    );
    crate::governance::record_refusal(state, ask, "rate_limit", &why, None, None).await;
    Some(crate::governance::Verdict::rate_limited(
        state, why, limited,
    ))
}

pub(crate) async fn unauthorized(state: &AppState, ask: &Ask, refused: Refused) -> Response {
    record_bypass_attempt(state, ask, refused.why, refused.claimed).await;
    with_trace(
        ApiError::unauthorized("Invalid or expired token").into_response(),
        &ask.trace_id,
    )
}

/// `response` with `X-MeshGuard-Trace-Id`, so a refused caller can quote its audit row.
pub(crate) fn with_trace(mut response: Response, trace: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(trace) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-meshguard-trace-id"), v);
    }
    response
}

/// The 200 body of an allowed check (typed: it is the answer to almost every call).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Allowed<'a> {
    action: &'a str,
    agent_id: &'a str,
    allowed: bool,
    decision: &'static str,
    latency_ms: f64,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    trace_id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    would_deny: bool,
}

pub(super) async fn check(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request's own headers, not the `HeaderMap` extractor's copy of them.
    let headers = request.headers();
    let trace = trace_id(headers);
    let action = header(headers, "x-meshguard-action")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                "X-MeshGuard-Action",
                "header is required, e.g. X-MeshGuard-Action: read:contacts",
            )
        })?
        .to_owned();
    let mut ask = Ask {
        action,
        resource: header(headers, "x-meshguard-resource")?
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
        method: Some("GET".to_owned()),
        path: Some("/proxy/check".to_owned()),
        context: context(headers)?,
        trace_id: trace.clone(),
        delegated_by: crate::governance::parse_chain(
            header(headers, "x-meshguard-delegated-by")?.unwrap_or(""),
        ),
        delegators_ok: Ok(()),
        narrowed: None,
    };
    if let Some(r) = client_limit(&state, addr, &ask).await {
        return Ok(r);
    }
    let agent = match authenticate(&state, headers).await? {
        Ok(a) => a,
        Err(refused) => return Ok(unauthorized(&state, &ask, refused).await),
    };
    if !ask.delegated_by.is_empty() {
        ask.delegators_ok =
            crate::governance::check_delegators(&state, &agent, &ask.delegated_by).await;
    }
    let v = govern(&state, &agent, &ask).await;
    if let Some(limited) = &v.rate_limited {
        return Ok(too_many(limited, &trace));
    }
    let latency_ms = (v.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let mut response = if v.allowed {
        Json(Allowed {
            action: &ask.action,
            agent_id: &agent.id,
            allowed: true,
            decision: "allow",
            latency_ms,
            mode: v.mode.as_str(),
            policy: v.policy.as_deref(),
            reason: &v.reason,
            rule: v.rule.as_deref(),
            trace_id: &trace,
            would_deny: v.would_deny,
        })
        .into_response()
    } else {
        let mut body = deny_body(&v, &ask.action, &trace);
        body["latencyMs"] = json!(latency_ms);
        (StatusCode::FORBIDDEN, Json(body)).into_response()
    };
    decision_headers(&mut response, &v, &trace, Some(&agent.id));
    Ok(response)
}
