//! `ALL /proxy/*`: govern the call, then stream it to `PROXY_TARGET` and the answer back.
//!
//! The agent's token and the admin token never go upstream; hop-by-hop headers are dropped both
//! ways; every answer carries `X-MeshGuard-Decision`, `-Policy`, `-Trace-Id` and `-Agent-Id`, so a
//! client can tell a gateway deny from an upstream 403.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::proxy::{
    authenticate, context, decision_headers, deny_body, header, unauthorized, with_trace,
};
use crate::auth::trace_id;
use crate::error::ApiError;
use crate::governance::{Ask, Narrowed, govern, record_refusal};
use crate::state::AppState;
use crate::store::AgentRecord;

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
pub(crate) fn upstream_client(
    timeout: Duration,
    roots: &[reqwest::Certificate],
) -> reqwest::Client {
    crate::tls::client_builder(roots)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .expect("a plain HTTP client builds")
}

/// The object a forwarded path names: its segments percent-decoded and joined with `/`.
///
/// The URL we forward keeps the raw path, and URL parsers (ours included) resolve `.` and `..`
/// segments, decoded or not; a path with such a segment, or with an encoded `/`, `\` or NUL
/// inside a segment, would reach the upstream as a different path than the one policies
/// judged, so it is refused.
fn forwarded_object(raw: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for segment in raw.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| format!("the path segment {segment:?} is not UTF-8 once decoded"))?;
        if decoded == "." || decoded == ".." {
            return Err(format!(
                "the path has a {decoded:?} segment, which the upstream would resolve to another path than the one governed; send the resolved path"
            ));
        }
        if decoded.contains(['/', '\\', '\0']) {
            return Err(format!(
                "the path segment {segment:?} encodes a '/', '\\' or NUL, which the upstream may read as another path than the one governed"
            ));
        }
        out.push(decoded.into_owned());
    }
    Ok(out.join("/"))
}

/// `object` is `base` or lies beneath it (`api/repos/x/readme` under `api/repos/x`).
fn beneath(object: &str, base: &str) -> bool {
    let object = object.trim_start_matches('/');
    let base = base.trim_matches('/');
    base.is_empty()
        || object.trim_end_matches('/') == base
        || object
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Checks the caller's `X-MeshGuard-Action` and `X-MeshGuard-Resource` against the call they
/// describe. They may name the same verb and the same path or an object beneath it (a narrower
/// view, which must then be allowed as well); anything else is refused with what disagrees.
fn narrowing(
    method: &Method,
    object: &str,
    action: Option<&str>,
    resource: Option<&str>,
) -> Result<Option<Narrowed>, (&'static str, String)> {
    let derived = derive_action(method, object);
    let (verb, _) = derived
        .split_once(':')
        .expect("derived actions have a verb");
    if let Some(claimed) = action {
        let agrees = claimed
            .split_once(':')
            .is_some_and(|(v, o)| v == verb && beneath(o, object));
        if !agrees {
            return Err((
                "X-MeshGuard-Action",
                format!(
                    "{claimed:?} does not describe this call: {method} /proxy/{object} is {derived:?}; the header may only name the same verb and the same path or an object beneath it"
                ),
            ));
        }
    }
    if let Some(claimed) = resource
        && !beneath(claimed, object)
    {
        return Err((
            "X-MeshGuard-Resource",
            format!("{claimed:?} is not the path of this call (/{object}) or an object beneath it"),
        ));
    }
    if action.is_none_or(|a| a == derived) && resource.is_none() {
        return Ok(None);
    }
    Ok(Some(Narrowed {
        action: action.unwrap_or(&derived).to_owned(),
        resource: resource.map(str::to_owned),
    }))
}

/// A call whose path or headers misdescribe it: 400 naming what disagrees, recorded as a
/// bypass attempt of this agent (which raises a critical alert).
async fn misdescribed(
    state: &AppState,
    ask: &Ask,
    agent: &AgentRecord,
    field: &str,
    why: &str,
) -> Response {
    tracing::warn!(agent = %agent.id, action = %ask.action, reason = why, "forwarded call misdescribed by its headers or path (bypass attempt)");
    record_refusal(
        state,
        ask,
        "bypass_attempt",
        why,
        Some(agent.id.clone()),
        Some((agent.name.clone(), agent.trust_tier.clone())),
    )
    .await;
    with_trace(ApiError::field(field, why).into_response(), &ask.trace_id)
}

pub(super) async fn forward(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let trace = trace_id(&parts.headers);
    // The path after `/proxy/` exactly as sent (still percent-encoded): what goes upstream.
    let raw = parts
        .uri
        .path()
        .strip_prefix("/proxy/")
        .unwrap_or_default()
        .to_owned();
    // What disagrees between the call and its description, if anything: refused once the
    // caller is known, and recorded as a bypass attempt.
    let (object, mut spoof) = match forwarded_object(&raw) {
        Ok(object) => (object, None),
        Err(why) => (raw.clone(), Some(("path", why))),
    };
    let narrowed = match narrowing(
        &parts.method,
        &object,
        header(&parts.headers, "x-meshguard-action")?.filter(|a| !a.is_empty()),
        header(&parts.headers, "x-meshguard-resource")?.filter(|r| !r.is_empty()),
    ) {
        Ok(n) => n,
        Err(mismatch) => {
            spoof = spoof.or(Some(mismatch));
            None
        }
    };
    let mut ask = Ask {
        action: derive_action(&parts.method, &object),
        resource: None,
        method: Some(parts.method.to_string()),
        path: Some(format!("/{object}")),
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
        narrowed,
    };
    if let Some(r) = super::proxy::client_limit(&state, addr, &ask).await {
        return Ok(r);
    }
    let agent = match authenticate(&state, &parts.headers).await? {
        Ok(a) => a,
        Err(refused) => return Ok(unauthorized(&state, &ask, refused).await),
    };
    if let Some((field, why)) = spoof {
        return Ok(misdescribed(&state, &ask, &agent, field, &why).await);
    }
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
    let mut url = format!("{}/{raw}", target.trim_end_matches('/'));
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
    // The client's framing is kept: a body sent with `Content-Length` goes on with that length
    // (hyper frames a streamed body by the header), a chunked one stays chunked, and a request
    // that had no body is sent without one.
    let has_body = parts
        .headers
        .contains_key(axum::http::header::CONTENT_LENGTH)
        || parts
            .headers
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    let mut request = state
        .inner
        .upstream
        .request(parts.method.clone(), &url)
        .headers(headers);
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream = request.send().await;
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
            tracing::warn!(target = %target, trace_id = %trace, error = %e, "proxy upstream failed");
            // The upstream's address is the site's, not the agent's business: it is in the
            // gateway's log under this trace id, never in the answer.
            (status, Json(json!({"error": code, "message": format!("{what}; the gateway's log has the details under trace id {trace}"), "traceId": trace}))).into_response()
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
    fn paths_that_an_upstream_would_resolve_elsewhere_are_refused() {
        assert_eq!(forwarded_object("api/repos/x").unwrap(), "api/repos/x");
        assert_eq!(forwarded_object("a%20b/c").unwrap(), "a b/c");
        for bad in [
            "api/repos/../../admin/x",
            "api/%2e%2E/admin",
            "./admin",
            "api/repos%2F..%2Fadmin",
            "a%5Cb",
            "a%00",
            "a%ff",
        ] {
            assert!(forwarded_object(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn headers_may_narrow_the_derived_action_and_never_replace_it() {
        let del = Method::DELETE;
        assert!(narrowing(&del, "admin/x", None, None).unwrap().is_none());
        assert!(
            narrowing(&del, "admin/x", Some("delete:admin/x"), None)
                .unwrap()
                .is_none()
        );
        let n = narrowing(
            &del,
            "api/repos",
            Some("delete:api/repos/x"),
            Some("api/repos/x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (n.action.as_str(), n.resource.as_deref()),
            ("delete:api/repos/x", Some("api/repos/x"))
        );
        for (action, resource) in [
            (Some("read:admin/x"), None),
            (Some("delete:admin"), None),
            (Some("delete:admin/xy"), None),
            (Some("admin:export"), None),
            (Some("delete"), None),
            (None, Some("other/x")),
            (None, Some("admin/xy")),
        ] {
            assert!(
                narrowing(&del, "admin/x", action, resource).is_err(),
                "{action:?} {resource:?} must be refused for DELETE admin/x"
            );
        }
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
