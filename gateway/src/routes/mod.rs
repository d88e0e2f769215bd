//! The HTTP surface: routes next to their handlers, one module per area. A handler takes the
//! parts of the state it uses (`State<Db>`, `State<AuditLog>`, …; see `state.rs`).

mod agents;
pub(crate) mod audit;
mod backup;
pub(crate) mod batch;
pub(crate) mod body;
pub(crate) mod canonical;
mod changes;
pub(crate) use changes::digest;
mod channels;
mod cluster;
mod forward;
mod license;
mod policies;
pub(crate) mod proxy;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use tower_http::trace::TraceLayer;

pub(crate) use forward::{end_to_end, upstream_client};

use crate::auth::Admin;
use crate::error::ApiError;
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::cluster::ControlPlane;
use crate::config::Config;
use crate::license::Licensing;
use crate::metrics::Metrics;
use crate::state::{AppState, Db, Policies, Readiness, Siem};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The whole gateway as a router, so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    if state.sidecar.is_some() {
        return sidecar_app(state);
    }
    let admin = Router::new()
        .route("/agents", get(agents::list).post(agents::create))
        .route(
            "/agents/:id",
            get(agents::get)
                .patch(agents::update)
                .put(agents::update)
                .delete(agents::revoke),
        )
        .route("/agents/:id/token", post(agents::reissue_token))
        .route("/policies", get(policies::list).post(policies::create))
        .route("/policies/validate", post(policies::validate))
        .route("/policies/test", post(policies::test))
        .route("/policies/versions", get(policies::versions))
        .route("/policies/bundle", get(policies::bundle))
        .route(
            "/policies/:key",
            get(policies::get)
                .put(policies::update)
                .patch(policies::update)
                .delete(policies::delete),
        )
        .route(
            "/alert-channels",
            get(channels::list).post(channels::create),
        )
        .route(
            "/alert-channels/:id",
            get(channels::get)
                .patch(channels::update)
                .put(channels::update)
                .delete(channels::delete),
        )
        .route("/changes", get(changes::list))
        .route("/alerts/undelivered", get(undelivered))
        .route("/alerts/deliveries", get(deliveries))
        .route("/siem", get(siem_status))
        .route("/backup/database", get(backup::database))
        .route("/audit", get(audit::list))
        .route("/audit/stats", get(audit::stats))
        .route("/audit/verify", get(audit::verify))
        .route("/audit/export", get(audit::export))
        .route("/audit/ingest", post(audit::ingest))
        .route(
            "/audit/checkpoint",
            get(audit::latest_checkpoint).post(audit::checkpoint),
        )
        .route("/audit/keys", get(audit::keys))
        .route("/audit/proof", get(audit::proof))
        .route("/audit/consistency", get(audit::consistency))
        .route("/audit/log/tile/entries/*path", get(audit::log_entries))
        .route(
            "/audit/cosignatures",
            get(audit::cosignatures).post(audit::add_cosignatures),
        )
        .route("/cluster/audit", get(cluster::list))
        .route("/cluster/audit/verify", get(cluster::verify))
        .route("/sidecars", get(crate::sidecar::list))
        .route("/info", get(info))
        .route("/license", get(license::get).post(license::install))
        .route("/license/request", axum::routing::post(license::request))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            license::gate,
        ))
        // One layer authenticates every admin route (the outermost, so it runs first): a handler
        // added without its `Admin` extractor is still behind it.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/proxy/check", get(proxy::check))
        .route("/proxy/*rest", any(forward::forward))
        .route("/audit/log/checkpoint", get(audit::log_checkpoint))
        .route("/audit/log/tile/*path", get(audit::log_tile))
        .route("/api/v1/governance/batch", post(batch::batch))
        .route(
            "/api/v1/sidecars/heartbeat",
            post(crate::sidecar::heartbeat),
        )
        .nest("/admin", admin.clone())
        .nest("/api/v1/admin", admin)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A guardian sidecar: the data plane for its one agent, and no admin API.
fn sidecar_app(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(crate::sidecar::health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/enforce", post(crate::sidecar::enforce))
        .route("/enforce/batch", post(crate::sidecar::enforce_batch))
        .route("/sidecar/export", get(crate::sidecar::export))
        .route("/proxy/check", get(proxy::check))
        .route("/proxy/*rest", any(forward::forward))
        .route("/api/v1/governance/batch", post(batch::batch))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The admin API's authentication: the admin token (and, with `ADMIN_CLIENT_CA_FILE`, a client
/// certificate from the site's admin CA), or 401.
async fn require_admin(
    State(config): State<Arc<Config>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::extract::FromRequestParts as _;
    let (mut parts, body) = req.into_parts();
    if let Err(rejection) = Admin::from_request_parts(&mut parts, &config).await {
        return rejection.into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

async fn root(State(config): State<Arc<Config>>) -> impl IntoResponse {
    axum::Json(json!({
        "name": "MeshGuard Gateway",
        "version": VERSION,
        "mode": config.mode.as_str(),
        "docs": "https://docs.meshguard.app",
    }))
}

/// Up or down for anyone (load balancers, probes, the SDKs' `status == "healthy"` check); the
/// version, mode, checks and license state only for the admin, as they tell an outsider what
/// to attack and when.
/// Unhealthy (503) when the database does not answer, or when a failed write or sync stopped
/// the audit log: every decision then fails closed until a restart, which the orchestrator's
/// liveness probe makes (a restart cuts the log back to what was synced and, with space on the
/// disk again, records again).
async fn health(
    State(config): State<Arc<Config>>,
    State(db): State<Db>,
    State(audit): State<AuditLog>,
    State(readiness): State<Readiness>,
    State(license): State<Arc<Licensing>>,
    admin: Option<Admin>,
) -> Response {
    let db = db.run(|s| s.ping()).await;
    let audit_stopped = audit.stopped();
    let healthy = db.is_ok() && !audit_stopped;
    let mut body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": crate::clock::now_rfc3339(),
    });
    if admin.is_some() {
        body["version"] = json!(VERSION);
        body["mode"] = json!(config.mode.as_str());
        body["uptime"] = json!(readiness.started.elapsed().as_secs());
        body["checks"] = json!({
            "database": if db.is_ok() { "ok" } else { "error" },
            "auditLog": if audit_stopped { "stopped: a write or sync failed; restart the gateway" } else { "ok" },
            "policies": if readiness.is_ready() { "ok" } else { "loading" },
        });
        // Licensing never makes the gateway unhealthy: it keeps enforcing whatever the state.
        body["license"] = license::summary(&license);
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "starting"})),
        )
            .into_response()
    }
}

async fn info(
    _: Admin,
    State(config): State<Arc<Config>>,
    State(policies): State<Policies>,
    State(audit): State<AuditLog>,
    State(control_plane): State<Arc<dyn ControlPlane>>,
    State(license): State<Arc<Licensing>>,
) -> impl IntoResponse {
    let c = &config;
    let snapshot = policies.snapshot();
    let mut info = json!({
        "name": "MeshGuard Gateway",
        "version": VERSION,
        "build": license.build(),
        "mode": c.mode.as_str(),
        "database": c.db_path.display().to_string(),
        // The SQLite schema this build migrates to: a rollback to a build with a lower one
        // needs the database as it was before the upgrade (docs/site-install.md).
        "schemaVersion": crate::store::SCHEMA_VERSION,
        "controlPlane": control_plane.status(),
        "policiesDir": c.policies_dir.display().to_string(),
        "filePolicies": policies.files().len(),
        "activePolicies": snapshot.len(),
        "policySnapshot": snapshot.version,
        "region": c.region,
        "deploymentMode": c.deployment_mode,
        "egressProxy": c.egress_proxy_port.is_some(),
        "egressRegions": c.egress_regions,
        "auditOrigin": c.audit_origin,
        "auditLog": {
            "size": audit.reader().durable_size(),
            "indexLag": audit.reader().index_lag(),
        },
        "auditRedaction": match c.audit_redaction {
            crate::redaction::Redaction::None => "none",
            crate::redaction::Redaction::Hipaa => meshguard_common::ephi::PROFILE,
        },
        "changeApprovalRequired": c.change_approval_required,
        "siem": c.siem.is_some(),
        "witnesses": c.audit_witnesses.len(),
        "witnessQuorum": c.audit_witness_quorum,
    });
    // Unset settings (region, deployment mode) are left out: clients' typed SDKs fail on null.
    if let Some(map) = info.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    axum::Json(info)
}

async fn undelivered(
    _: Admin,
    State(db): State<Db>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let alerts = db.run(|s| s.list_undelivered(1000)).await?;
    Ok(axum::Json(json!({ "alerts": alerts })))
}

#[derive(Debug, serde::Deserialize)]
struct DeliveriesQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// Every alert's outcome per channel, oldest first, optionally in a period.
async fn deliveries(
    _: Admin,
    State(db): State<Db>,
    axum::extract::Query(q): axum::extract::Query<DeliveriesQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let list = db
        .run(move |s| s.list_deliveries(q.from.as_deref(), q.to.as_deref(), limit))
        .await?;
    Ok(axum::Json(json!({ "deliveries": list })))
}

/// The SIEM forwarder's progress: target, connected, cursor, how far it lags the log.
async fn siem_status(
    _: Admin,
    State(siem): State<Siem>,
    State(audit): State<AuditLog>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Some(status) = &siem else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "SIEM egress is off; set SIEM_SYSLOG_URL",
        ));
    };
    let status = status.lock().expect("not poisoned").clone();
    let durable = audit.reader().durable_size();
    let mut body = serde_json::to_value(&status).expect("serializable");
    body["durable"] = json!(durable);
    body["lag"] = json!(durable.saturating_sub(status.cursor));
    Ok(axum::Json(body))
}

async fn metrics(
    State(config): State<Arc<Config>>,
    State(db): State<Db>,
    State(metrics): State<Arc<Metrics>>,
    State(license): State<Arc<Licensing>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !config.metrics_enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are off; set METRICS_ENABLED=true",
        ));
    }
    if let Some(expected) = &config.metrics_token {
        let presented = crate::auth::bearer(&headers);
        if !presented.is_some_and(|p| crate::auth::tokens_equal(p, expected)) {
            return Err(ApiError::unauthorized(
                "/metrics requires the metrics token (METRICS_TOKEN) as `Authorization: Bearer`; \
                 in Prometheus, set the scrape job's `authorization.credentials`",
            ));
        }
    }
    let active = match metrics.fresh_agents() {
        Some(n) => n,
        None => {
            let agents = db.run(|s| s.list_agents()).await?;
            let n = agents.iter().filter(|a| a.revoked_at.is_none()).count();
            metrics.remember_agents(n);
            n
        }
    };
    let mut text = metrics.render(config.mode.as_str(), active);
    license.render_metrics(&mut text);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see GET / and the admin API under /admin",
    )
}
