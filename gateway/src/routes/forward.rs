//! `ALL /proxy/*`: govern the call, then stream it to `PROXY_TARGET` and the answer back.
//!
//! The agent's token and the admin token never go upstream; hop-by-hop headers are dropped both
//! ways; every answer carries `X-MeshGuard-Decision`, `-Policy`, `-Trace-Id` and `-Agent-Id`, so a
//! client can tell a gateway deny from an upstream 403.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::proxy::{authenticate, context, decision_headers, deny_body, unauthorized};
use crate::auth::trace_id;
use crate::error::ApiError;
use crate::governance::{Ask, govern};
use crate::state::AppState;

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), plus the
/// credentials that must not leave the gateway.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "x-admin-token",
];

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let listed: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if !DROPPED.contains(&n) && !listed.iter().any(|l| l == n) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `DELETE /proxy/api/users/123` → `delete:api/users/123` (MeshGuard's HTTP integration docs).
pub(crate) fn derive_action(method: &Method, path: &str) -> String {
    let verb = match *method {
        Method::POST | Method::PUT | Method::PATCH => "write",
        Method::DELETE => "delete",
        _ => "read",
    };
    format!("{verb}:{}", path.trim_start_matches('/'))
}

/// The shared upstream client: connection pooling, timeouts, no redirects followed.
pub(crate) fn upstream_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .expect("a plain HTTP client builds")
}

pub(super) async fn forward(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    Path(rest): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let trace = trace_id(&parts.headers);
    let action = match parts.headers.get("x-meshguard-action") {
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ApiError::field("X-MeshGuard-Action", "must be printable ASCII text"))?
            .to_owned(),
        None => derive_action(&parts.method, &rest),
    };
    let mut ask = Ask {
        action,
        resource: parts
            .headers
            .get("x-meshguard-resource")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        method: Some(parts.method.to_string()),
        path: Some(format!("/{}", rest.trim_start_matches('/'))),
        context: context(&parts.headers)?,
        trace_id: trace.clone(),
        delegated_by: crate::governance::parse_chain(
            parts
                .headers
                .get("x-meshguard-delegated-by")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        delegators_ok: Ok(()),
    };
    if let Some(r) = super::proxy::client_limit(&state, addr, &ask).await {
        return Ok(r);
    }
    let agent = match authenticate(&state, &parts.headers).await? {
        Ok(a) => a,
        Err(refused) => return Ok(unauthorized(&state, &ask, refused).await),
    };
    if !ask.delegated_by.is_empty() {
        ask.delegators_ok =
            crate::governance::check_delegators(&state, &agent, &ask.delegated_by).await;
    }
    let verdict = govern(&state, &agent, &ask).await;
    if let Some(limited) = &verdict.rate_limited {
        return Ok(super::proxy::too_many(limited, &trace));
    }
    if !verdict.allowed {
        let mut r = (
            StatusCode::FORBIDDEN,
            Json(deny_body(&verdict, &ask.action, &trace)),
        )
            .into_response();
        decision_headers(&mut r, &verdict, &trace, Some(&agent.id));
        return Ok(r);
    }
    let Some(target) = state.config().proxy_target.as_deref() else {
        let mut r = (
            StatusCode::BAD_GATEWAY,
            Json(json!({
                "error": "no_upstream",
                "message": "the call is allowed, but this gateway has no PROXY_TARGET to forward it to; use GET /proxy/check for decisions only",
                "traceId": trace,
            })),
        )
            .into_response();
        decision_headers(&mut r, &verdict, &trace, Some(&agent.id));
        return Ok(r);
    };
    let mut url = format!(
        "{}/{}",
        target.trim_end_matches('/'),
        rest.trim_start_matches('/')
    );
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = forwardable(&parts.headers);
    headers.insert(
        HeaderName::from_static("x-meshguard-agent-id"),
        agent.id.parse().expect("ids are ASCII"),
    );
    if let Ok(v) = trace.parse() {
        headers.insert(HeaderName::from_static("x-meshguard-trace-id"), v);
    }
    let upstream = state
        .inner
        .upstream
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let mut response = match upstream {
        Ok(up) => {
            let status = up.status();
            let headers = forwardable(up.headers());
            let mut r = Response::new(Body::from_stream(up.bytes_stream()));
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        }
        Err(e) => {
            let (status, code, what) = if e.is_timeout() {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the upstream could not be reached",
                )
            };
            tracing::warn!(target = %target, error = %e, "proxy upstream failed");
            (status, Json(json!({"error": code, "message": format!("{what} (PROXY_TARGET {target})"), "traceId": trace}))).into_response()
        }
    };
    decision_headers(&mut response, &verdict, &trace, Some(&agent.id));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_derived_as_the_http_docs_say() {
        assert_eq!(
            derive_action(&Method::DELETE, "api/users/123"),
            "delete:api/users/123"
        );
        assert_eq!(derive_action(&Method::GET, "/x"), "read:x");
        assert_eq!(derive_action(&Method::PATCH, "a"), "write:a");
        assert_eq!(derive_action(&Method::HEAD, "a"), "read:a");
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer secret".parse().unwrap());
        h.insert("connection", "close, x-custom-hop".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        let out = forwardable(&h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("x-keep"));
    }
}
