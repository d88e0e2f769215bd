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

use super::canonical::{ALLOW, canonical_path, derive_action, override_in, override_in_form, verb};
use super::proxy::{
    authenticate, context, decision_headers, deny_body, header, unauthorized, with_trace,
};
use crate::auth::trace_id;
use crate::error::ApiError;
use crate::governance::{Ask, Narrowed, govern, record_refusal};
use crate::state::AppState;
use crate::store::AgentRecord;

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1): never passed
/// on, by the forwarder or the egress proxy.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What the forwarder also keeps from the upstream: the body is read whole and sent with its
/// own length, the host is the target's, and the credentials stay at the gateway.
const ALSO_DROPPED: &[&str] = &["content-length", "host", "authorization", "x-admin-token"];

/// The caller's `X-MeshGuard-*` headers that go upstream: those the call was judged with. Any
/// other (`X-MeshGuard-Decision`, `-Policy`, ...) is the gateway's to say, never the caller's.
const JUDGED: &[&str] = &[
    "x-meshguard-action",
    "x-meshguard-resource",
    "x-meshguard-meta",
    "x-meshguard-delegated-by",
];

/// `headers` without those of one hop (and those the `Connection` header names as such), nor
/// any for which `drop` holds.
pub(crate) fn end_to_end(headers: &HeaderMap, drop: impl Fn(&str) -> bool) -> HeaderMap {
    let listed: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if !HOP_BY_HOP.contains(&n) && !listed.iter().any(|l| l == n) && !drop(n) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Headers that go on: end to end, no credentials, and no `X-MeshGuard-*` but `keep`.
fn forwardable(headers: &HeaderMap, keep: &[&str]) -> HeaderMap {
    end_to_end(headers, |n| {
        ALSO_DROPPED.contains(&n) || (n.starts_with("x-meshguard-") && !keep.contains(&n))
    })
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
    let verb = super::canonical::verb(method).unwrap_or(method.as_str());
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

/// What is wrong with a call that misdescribes itself: refused once the caller is known, and
/// recorded as a bypass attempt of that agent (which raises a critical alert).
struct Misdescribed {
    status: StatusCode,
    field: String,
    why: String,
}

impl Misdescribed {
    fn bad_request(field: &str, why: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            field: field.to_owned(),
            why,
        }
    }
}

/// The first way in which the call's method, path, headers or query would let the upstream
/// do something other than what is judged, if any.
fn misdescription(
    parts: &axum::http::request::Parts,
    path: &Result<super::canonical::CanonicalPath, String>,
    narrowed: &Result<Option<Narrowed>, (&'static str, String)>,
) -> Option<Misdescribed> {
    if verb(&parts.method).is_none() {
        return Some(Misdescribed {
            status: StatusCode::METHOD_NOT_ALLOWED,
            field: "method".to_owned(),
            why: format!(
                "the method {:?} is not forwarded; the gateway forwards {ALLOW} (methods are case-sensitive)",
                parts.method.as_str()
            ),
        });
    }
    if let Err(why) = path {
        return Some(Misdescribed::bad_request("path", why.clone()));
    }
    if let Some((field, why)) = override_in(&parts.headers, parts.uri.query()) {
        return Some(Misdescribed::bad_request(&field, why));
    }
    if let Err((field, why)) = narrowed {
        return Some(Misdescribed::bad_request(field, why.clone()));
    }
    None
}

/// Refuses a call that misdescribes itself, recording it as a bypass attempt of this agent.
async fn misdescribed(
    state: &AppState,
    ask: &Ask,
    agent: &AgentRecord,
    wrong: Misdescribed,
) -> Response {
    tracing::warn!(agent = %agent.id, action = %ask.action, reason = %wrong.why, "forwarded call misdescribed by its method, path or headers (bypass attempt)");
    record_refusal(
        state,
        ask,
        "bypass_attempt",
        &wrong.why,
        Some(agent.id.clone()),
        Some((agent.name.clone(), agent.trust_tier.clone())),
    )
    .await;
    let mut error = ApiError::field(&wrong.field, &wrong.why).into_response();
    *error.status_mut() = wrong.status;
    if wrong.status == StatusCode::METHOD_NOT_ALLOWED {
        error.headers_mut().insert(
            axum::http::header::ALLOW,
            axum::http::HeaderValue::from_static(ALLOW),
        );
    }
    with_trace(error, &ask.trace_id)
}

pub(super) async fn forward(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let trace = trace_id(&parts.headers);
    // The path after `/proxy/` exactly as sent (still percent-encoded): what is judged, once
    // canonicalized; the upstream gets the canonical form re-encoded, never these bytes.
    let raw = parts
        .uri
        .path()
        .strip_prefix("/proxy/")
        .unwrap_or_default()
        .to_owned();
    // The call in canonical form; what disagrees with it, if anything, is refused once the
    // caller is known, and recorded as a bypass attempt.
    let path = canonical_path(&raw);
    let object = path
        .as_ref()
        .map_or_else(|_| raw.clone(), |p| p.object.clone());
    let narrowed = narrowing(
        &parts.method,
        &object,
        header(&parts.headers, "x-meshguard-action")?.filter(|a| !a.is_empty()),
        header(&parts.headers, "x-meshguard-resource")?.filter(|r| !r.is_empty()),
    );
    let wrong = misdescription(&parts, &path, &narrowed);
    let mut ask = judged_ask(&parts, &object, narrowed.ok().flatten(), &trace)?;
    if let Some(r) = super::proxy::client_limit(&state, addr, &ask).await {
        return Ok(r);
    }
    let agent = match authenticate(&state, &parts.headers).await? {
        Ok(a) => a,
        Err(refused) => return Ok(unauthorized(&state, &ask, refused).await),
    };
    if let Some(wrong) = wrong {
        return Ok(misdescribed(&state, &ask, &agent, wrong).await);
    }
    let path = path.expect("a path that is refused is a misdescription, answered above");
    let body = match read_whole_body(&state, body).await {
        Ok(b) => b,
        Err(refusal) => return Ok(body_refused(&state, &ask, &agent, refusal).await),
    };
    if let Some((field, why)) = override_in_form(&parts.headers, &body) {
        let wrong = Misdescribed::bad_request(&field, why);
        return Ok(misdescribed(&state, &ask, &agent, wrong).await);
    }
    if !ask.delegated_by.is_empty() {
        ask.delegators_ok =
            crate::governance::check_delegators(&state, &agent, &ask.delegated_by).await;
    }
    let verdict = govern(&state, &agent, &ask).await;
    if let Some(limited) = &verdict.rate_limited {
        return Ok(super::proxy::too_many(limited, &trace));
    }
    let mut response = if !verdict.allowed {
        (
            StatusCode::FORBIDDEN,
            Json(deny_body(&verdict, &ask.action, &trace)),
        )
            .into_response()
    } else if let Some(target) = state.config.proxy_target.as_deref() {
        let call = Judged {
            parts: &parts,
            path: &path,
            agent_id: &agent.id,
            trace: &trace,
        };
        send_upstream(&state, target, call, body).await
    } else {
        no_upstream(&trace)
    };
    decision_headers(&mut response, &verdict, &trace, Some(&agent.id));
    Ok(response)
}

/// The decision a `/proxy/*` call asks for: the action derived from its method and canonical
/// object, its context, its delegation chain and the narrowing its headers name.
fn judged_ask(
    parts: &axum::http::request::Parts,
    object: &str,
    narrowed: Option<Narrowed>,
    trace: &str,
) -> Result<Ask, ApiError> {
    Ok(Ask {
        action: derive_action(&parts.method, object),
        resource: None,
        method: Some(parts.method.to_string()),
        path: Some(format!("/{object}")),
        context: context(&parts.headers)?,
        trace_id: trace.to_owned(),
        delegated_by: crate::governance::parse_chain(
            parts
                .headers
                .get("x-meshguard-delegated-by")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        ),
        delegators_ok: Ok(()),
        narrowed,
    })
}

/// The body is read whole before anything is decided: a body over MAX_BODY_BYTES or one the
/// client does not finish in the body timeout is refused and never half-forwarded.
async fn read_whole_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, BodyRefusal> {
    let timeout = state.config.connections.body_timeout;
    tokio::time::timeout(timeout, read_body(body, state.config.max_body_bytes))
        .await
        .unwrap_or(Err(BodyRefusal::Slow(timeout)))
}

/// An allowed call on a gateway with no upstream to forward it to.
fn no_upstream(trace: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        Json(json!({
            "error": "no_upstream",
            "message": "the call is allowed, but this gateway has no PROXY_TARGET to forward it to; use GET /proxy/check for decisions only",
            "traceId": trace,
        })),
    )
        .into_response()
}

/// What was judged of an allowed call, and all that goes upstream with its body.
struct Judged<'a> {
    parts: &'a axum::http::request::Parts,
    path: &'a super::canonical::CanonicalPath,
    agent_id: &'a str,
    trace: &'a str,
}

/// Forwards the judged call to the upstream and streams its answer back, without the
/// upstream's own X-MeshGuard-* headers.
async fn send_upstream(
    state: &AppState,
    target: &str,
    call: Judged<'_>,
    body: axum::body::Bytes,
) -> Response {
    let Judged {
        parts,
        path,
        agent_id,
        trace,
    } = call;
    // The judged object, encoded by one rule: never the caller's own bytes.
    let mut url = format!("{}/{}", target.trim_end_matches('/'), path.upstream);
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = forwardable(&parts.headers, JUDGED);
    headers.insert(
        HeaderName::from_static("x-meshguard-agent-id"),
        agent_id.parse().expect("ids are ASCII"),
    );
    if let Ok(v) = trace.parse() {
        headers.insert(HeaderName::from_static("x-meshguard-trace-id"), v);
    }
    // What goes upstream is framed by the body's real length, whatever the client's headers
    // said: a body goes on with its length (any method's, GET's too); a request that had none
    // is sent without one.
    let declared = parts
        .headers
        .contains_key(axum::http::header::CONTENT_LENGTH)
        || parts
            .headers
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    let mut request = state
        .upstream
        .request(parts.method.clone(), &url)
        .headers(headers);
    if declared || !body.is_empty() {
        request = request.body(body);
    }
    match request.send().await {
        Ok(up) => {
            let status = up.status();
            // The upstream's own X-MeshGuard-* headers could pass for the gateway's decision.
            let headers = forwardable(up.headers(), &[]);
            let mut r = Response::new(Body::from_stream(up.bytes_stream()));
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        }
        Err(e) => upstream_failed(target, trace, &e),
    }
}

/// The answer when the upstream cannot be reached or does not answer in time.
fn upstream_failed(target: &str, trace: &str, e: &reqwest::Error) -> Response {
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
    // The upstream's address is the site's, not the agent's business: it is in the gateway's
    // log under this trace id, never in the answer.
    (
        status,
        Json(json!({
            "error": code,
            "message": format!("{what}; the gateway's log has the details under trace id {trace}"),
            "traceId": trace,
        })),
    )
        .into_response()
}

/// Why a request's body was not taken.
enum BodyRefusal {
    TooLarge(usize),
    Unfinished(String),
    Slow(Duration),
}

/// The whole body, at most `max` bytes.
async fn read_body(body: Body, max: usize) -> Result<axum::body::Bytes, BodyRefusal> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyRefusal::Unfinished(e.to_string()))?;
        if out.len() + chunk.len() > max {
            return Err(BodyRefusal::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

/// A body over the limit (413) or not finished by the client (400): recorded as a refusal of
/// this agent's call; nothing was decided or forwarded.
async fn body_refused(
    state: &AppState,
    ask: &Ask,
    agent: &AgentRecord,
    refusal: BodyRefusal,
) -> Response {
    let (status, code, why) = match refusal {
        BodyRefusal::TooLarge(max) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over MAX_BODY_BYTES ({max} bytes); nothing was forwarded"),
        ),
        BodyRefusal::Slow(limit) => (
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within HTTP_BODY_TIMEOUT_SECONDS ({} s); nothing was forwarded",
                limit.as_secs()
            ),
        ),
        BodyRefusal::Unfinished(e) => (
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            format!(
                "the request body could not be read from the client ({e}); nothing was forwarded"
            ),
        ),
    };
    record_refusal(
        state,
        ask,
        code,
        &why,
        Some(agent.id.clone()),
        Some((agent.name.clone(), agent.trust_tier.clone())),
    )
    .await;
    with_trace(
        ApiError::new(status, code, why).into_response(),
        &ask.trace_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = forwardable(&h, JUDGED);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("x-keep"));
    }
}
