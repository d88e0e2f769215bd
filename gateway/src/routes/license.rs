//! `GET/POST /admin/license`, the admin-write gate, and the license summary in `/health`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meshguard_license::site::InstallKind;
use serde_json::{Value, json};

use crate::alerts::Alerts;
use crate::auth::Admin;
use crate::config::Config;
use crate::error::ApiError;
use crate::license::Licensing;

/// The short form `/health` carries.
pub(super) fn summary(license: &Licensing) -> Value {
    let s = license.status();
    let mut v = json!({
        "state": s.state,
        "adminWritesAllowed": s.admin_writes_allowed,
    });
    if let Some(expires) = &s.expires {
        v["expires"] = expires.clone().into();
    }
    if !s.warnings.is_empty() {
        v["warnings"] = json!(s.warnings);
    }
    v
}

pub(super) async fn get(_: Admin, State(license): State<Arc<Licensing>>) -> impl IntoResponse {
    let status = license.status();
    let mut body = serde_json::to_value(status.as_ref()).unwrap_or_default();
    if let Some(id) = license.vendor_key_id() {
        body["vendorKeyId"] = id.into();
    }
    axum::Json(body)
}

pub(super) async fn install(
    _: Admin,
    State(license): State<Arc<Licensing>>,
    State(alerts): State<Alerts>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let (kind, status) =
        tokio::task::spawn_blocking(move || license.install(body.to_vec(), &alerts))
            .await
            .map_err(ApiError::internal)??;
    let result = match kind {
        InstallKind::Activated => "activated",
        InstallKind::Renewed { .. } => "renewed",
        InstallKind::Unchanged => "unchanged",
    };
    Ok(axum::Json(
        json!({ "result": result, "license": status.as_ref() }),
    ))
}

/// `POST /admin/license/request`: makes this installation's activation request for the license
/// in the body (possibly age-encrypted to the site) and answers it, to take to the vendor. On a
/// shared control plane the request is the installation's, whichever gateway makes it.
pub(super) async fn request(
    _: Admin,
    State(license): State<Arc<Licensing>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request = tokio::task::spawn_blocking(move || license.request(body.to_vec()))
        .await
        .map_err(ApiError::internal)??;
    Ok(axum::Json(request))
}

/// Writes that stay open whatever the license says: the license itself, audit intake and
/// checkpoints, read-only policy tools, and the security actions on existing agents
/// (revocation and token re-issue), which must never wait for a renewal.
fn always_open(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let post = *method == Method::POST;
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (post && matches!(path, "/license" | "/license/request"))
        || (post && segments.first() == Some(&"audit"))
        || (post && matches!(path, "/policies/validate" | "/policies/test"))
        // Revoking one agent, and re-issuing one agent's token.
        || (*method == Method::DELETE && matches!(segments[..], ["agents", id] if !id.is_empty()))
        || (post && matches!(segments[..], ["agents", id, "token"] if !id.is_empty()))
}

/// Freezes admin writes when the license calls for it and adds the license warning, if any,
/// to every admin response (`X-MeshGuard-License-Warning`).
pub(super) async fn gate(
    State(license): State<Arc<Licensing>>,
    State(config): State<Arc<Config>>,
    req: Request,
    next: Next,
) -> Response {
    if !always_open(req.method(), req.uri().path())
        && let Err(e) = license.check_write()
    {
        // Only an administrator learns the license state: authenticate first.
        let (mut parts, _body) = req.into_parts();
        if let Err(rejection) = Admin::from_request_parts(&mut parts, &config).await {
            return rejection.into_response();
        }
        return e.into_response();
    }
    let mut response = next.run(req).await;
    if let Some(w) = license.status().warnings.first()
        && let Ok(v) = HeaderValue::from_str(w)
    {
        response
            .headers_mut()
            .insert("x-meshguard-license-warning", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_writes_stay_open_whatever_the_method_or_path_shape() {
        let table = [
            (Method::GET, "/agents", true),
            (Method::POST, "/license", true),
            (Method::POST, "/license/request", true),
            (Method::PUT, "/license", false),
            (Method::POST, "/audit/ingest", true),
            (Method::DELETE, "/audit/ingest", false),
            (Method::POST, "/policies/validate", true),
            (Method::PUT, "/policies/validate", false),
            (Method::DELETE, "/agents/agt_1", true),
            (Method::DELETE, "/agents/agt_1/token", false),
            (Method::DELETE, "/agents/", false),
            (Method::POST, "/agents/agt_1/token", true),
            (Method::PATCH, "/agents/agt_1/token", false),
            (Method::PUT, "/agents/token", false),
            (Method::POST, "/agents//token", false),
            (Method::POST, "/agents", false),
            (Method::PATCH, "/agents/agt_1", false),
            (Method::POST, "/policies", false),
            (Method::POST, "/alerts/channels", false),
        ];
        for (method, path, open) in table {
            assert_eq!(always_open(&method, path), open, "{method} {path}");
        }
    }
}
