//! The guardian sidecar: the same gateway binary, scoped to a single agent and run in its pod.
//!
//! With `SIDECAR_AGENT_ID` set the process enforces a signed policy bundle (`POLICY_BUNDLE`,
//! checked with `POLICY_BUNDLE_PUBKEY`; nothing unsigned is read) for that agent alone. It
//! listens on the pod's loopback by default, so only its own pod reaches it, and the pod is the
//! identity: calls need no token. It answers the Guardian contract (`POST /enforce`,
//! `POST /enforce/batch`) and the gateway's data plane (`/proxy/check`, `/proxy/*` to
//! `PROXY_TARGET`, the batch endpoint), so an agent's SDK works unchanged against it.
//!
//! Every decision goes into the sidecar's own audit log, an origin of its own with its own
//! checkpoint key (`meshguard-sidecar/<agent>/<instance>`, kept in `CACHE_DIR`). Heartbeats
//! (`POST /api/v1/sidecars/heartbeat` on `GATEWAY_URL`, authenticated with the agent's token)
//! carry the entries the control plane does not hold yet, with a checkpoint signed by that key.
//! The first heartbeat registers the origin and key; later ones must be signed by the same
//! key, and the entries must rebuild exactly the tree the checkpoint signs. The answer brings
//! the agent's registered record (tier, tags), or its revocation, after which the sidecar
//! refuses every call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::audit::AuditLog;
use crate::audit::merkle;
use crate::auth::{Admin, bearer, trace_id};
use crate::config::{Args, ConfigError};
use crate::error::ApiError;
use crate::governance::{Ask, govern};
use crate::routes::body::{RawBody, parse_json};
use crate::state::{AppState, Db, Policies};
use crate::store::{AgentRecord, SidecarRecord};

/// Lines one heartbeat carries at most; a longer backlog goes in several.
const LINES_PER_BEAT: usize = 500;
/// The most bytes of entries one heartbeat carries: well inside the control plane's default
/// `MAX_BODY_BYTES` (1 MiB), whatever the entries hold (one entry is under 60 KiB, bounded where
/// it is written), so long entries go in more beats instead of being refused on every beat.
const BYTES_PER_BEAT: usize = 640 * 1024;

#[derive(Clone)]
pub struct SidecarConfig {
    pub agent_id: String,
    pub gateway_url: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The agent's token when given in the environment (never logged).
    token: Option<String>,
    pub interval: Duration,
    pub cache_dir: PathBuf,
    pub trust_tier: String,
    pub tags: Vec<String>,
}

impl std::fmt::Debug for SidecarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarConfig")
            .field("agent_id", &self.agent_id)
            .field("gateway_url", &self.gateway_url)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("interval", &self.interval)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl SidecarConfig {
    /// The sidecar settings, when `SIDECAR_AGENT_ID` is set; fills the defaults a sidecar has
    /// for the gateway's own settings (database and audit key in `CACHE_DIR`, no policy
    /// directory, an origin of its own).
    pub(crate) fn from_args(args: &mut Args) -> Result<Option<Self>, ConfigError> {
        let Some(agent_id) = args
            .sidecar_agent_id
            .clone()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let fail = |m: String| Err(ConfigError::Sidecar(m));
        if agent_id.contains(|c: char| c.is_whitespace() || c == '+' || c == '/') {
            return fail(format!(
                "SIDECAR_AGENT_ID {agent_id:?} is not an agent id; use the id the gateway gave the agent (agent_…)"
            ));
        }
        if args.policy_bundle.is_none() || args.policy_bundle_pubkey.is_none() {
            return fail(
                "a guardian sidecar enforces a signed policy bundle only: set POLICY_BUNDLE and POLICY_BUNDLE_PUBKEY (GET /admin/policies/bundle on the gateway, or the bundle on the media)".into(),
            );
        }
        if meshguard_api::TrustTier::parse(&args.sidecar_agent_trust_tier).is_err() {
            return fail(format!(
                "SIDECAR_AGENT_TRUST_TIER {:?} is not a trust tier; use untrusted, verified, trusted or privileged",
                args.sidecar_agent_trust_tier
            ));
        }
        let gateway_url = args
            .gateway_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        if let Some(u) = &gateway_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return fail(format!(
                    "GATEWAY_URL {u:?} is not an http(s) URL; use e.g. http://meshguard:3100"
                ));
            }
            if args.sidecar_agent_token_file.is_none()
                && args
                    .sidecar_agent_token
                    .as_deref()
                    .is_none_or(str::is_empty)
            {
                return fail(
                    "GATEWAY_URL is set, but neither SIDECAR_AGENT_TOKEN_FILE nor SIDECAR_AGENT_TOKEN is: heartbeats are authenticated with the agent's token".into(),
                );
            }
        }
        let cache_dir = args.cache_dir.clone();
        if args.db_path.is_none() {
            args.db_path = Some(cache_dir.join("sidecar.db"));
        }
        // Unsigned policy files are never read by a sidecar.
        args.policies_dir = PathBuf::new();
        if args.audit_origin.as_deref().is_none_or(str::is_empty) {
            args.audit_origin = Some(instance_origin(&cache_dir, &agent_id).map_err(|e| {
                ConfigError::Sidecar(format!(
                    "cannot keep the sidecar's origin in CACHE_DIR {}: {e}; give the sidecar a writable cache directory",
                    cache_dir.display()
                ))
            })?);
        }
        Ok(Some(Self {
            agent_id,
            gateway_url,
            token_file: args.sidecar_agent_token_file.clone(),
            token: args.sidecar_agent_token.clone().filter(|t| !t.is_empty()),
            interval: Duration::from_secs(args.bundle_sync_interval.clamp(1, 86_400)),
            cache_dir,
            trust_tier: args.sidecar_agent_trust_tier.clone(),
            tags: args
                .sidecar_agent_tags
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
        }))
    }
}

/// This sidecar instance's log origin, made once and kept in the cache: a sidecar whose cache
/// is lost starts a new log under a new origin rather than a second log under the old one.
fn instance_origin(cache: &Path, agent: &str) -> std::io::Result<String> {
    let path = cache.join("origin");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let origin = format!(
        "meshguard-sidecar/{agent}/{}",
        crate::ids::new_secret(12).to_ascii_lowercase()
    );
    meshguard_common::fsx::write_atomic(
        &path,
        format!("{origin}\n").as_bytes(),
        meshguard_common::fsx::Mode::Public,
    )?;
    Ok(origin)
}

/// The sidecar's runtime state: its agent as last known, and how heartbeats are going.
#[derive(Debug)]
pub(crate) struct Sidecar {
    pub(crate) config: SidecarConfig,
    agent: RwLock<Arc<AgentRecord>>,
    status: Mutex<Status>,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    last_ok: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// Entries of this sidecar's log the control plane holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies_current: Option<bool>,
}

/// What a heartbeat's answer says about the agent, cached in `CACHE_DIR/agent.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgentView {
    id: String,
    name: String,
    trust_tier: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

impl Sidecar {
    pub(crate) fn new(config: SidecarConfig) -> Self {
        let cached = std::fs::read(config.cache_dir.join("agent.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<AgentView>(&b).ok())
            .filter(|v| v.id == config.agent_id);
        let view = cached.unwrap_or_else(|| AgentView {
            id: config.agent_id.clone(),
            name: config.agent_id.clone(),
            trust_tier: config.trust_tier.clone(),
            tags: config.tags.clone(),
            revoked_at: None,
        });
        Self {
            agent: RwLock::new(Arc::new(record(&view))),
            status: Mutex::new(Status::default()),
            config,
        }
    }

    /// The agent this sidecar governs.
    pub(crate) fn agent(&self) -> Arc<AgentRecord> {
        Arc::clone(&self.agent.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn learn(&self, view: &AgentView) {
        let rec = record(view);
        let changed = *self.agent() != rec;
        if changed {
            if rec.revoked_at.is_some() {
                tracing::warn!(agent = %rec.id, "the control plane revoked this agent: every call is refused from now on");
            } else {
                tracing::info!(agent = %rec.id, tier = %rec.trust_tier, "agent record updated from the control plane");
            }
            let bytes = serde_json::to_vec_pretty(view).expect("agent views serialize");
            if let Err(e) = meshguard_common::fsx::write_atomic(
                &self.config.cache_dir.join("agent.json"),
                &bytes,
                meshguard_common::fsx::Mode::Public,
            ) {
                tracing::warn!(error = %e, "cannot cache the agent record; it is kept in memory");
            }
            *self.agent.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rec);
        }
    }

    fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn record(v: &AgentView) -> AgentRecord {
    AgentRecord {
        id: v.id.clone(),
        name: v.name.clone(),
        trust_tier: v.trust_tier.clone(),
        tags: v.tags.clone(),
        metadata: Map::new(),
        capabilities: Vec::new(),
        description: None,
        token_ttl: None,
        token_version: 0,
        revision: 0,
        created_at: String::new(),
        updated_at: String::new(),
        revoked_at: v.revoked_at.clone(),
    }
}

// ---- the sidecar's side: heartbeats ----

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeartbeatRequest {
    origin: String,
    vkey: String,
    /// The sidecar's agent (used when an export carried by hand registers the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_id: Option<String>,
    #[serde(default)]
    bundle_version: Option<u64>,
    /// The digest of the policy set the sidecar enforces (`AppState::policy_set_digest`).
    #[serde(default)]
    policy_digest: Option<String>,
    #[serde(default)]
    lines: Vec<meshguard_api::AuditExportLine>,
    /// Signed by the sidecar's key over its log up to the last line sent.
    #[serde(default)]
    checkpoint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeartbeatAnswer {
    agent: AgentView,
    held: u64,
    /// Whether the sidecar enforces the control plane's policy set.
    #[serde(default)]
    policies_current: bool,
}

/// Sends heartbeats every interval until the process ends (when `GATEWAY_URL` is set).
pub(crate) fn spawn_heartbeats(state: AppState) {
    let Some(sc) = state.sidecar.as_ref() else {
        return;
    };
    if sc.config.gateway_url.is_none() {
        tracing::info!(
            "no GATEWAY_URL: a disconnected sidecar; export its audit log to the control plane by hand"
        );
        return;
    }
    let interval = sc.config.interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            beat_and_record(&state).await;
        }
    });
}

/// One heartbeat (as many requests as the backlog needs), its outcome kept for `/health`.
pub(crate) async fn beat_and_record(state: &AppState) {
    let Some(sc) = state.sidecar.as_ref() else {
        return;
    };
    let result = beat(state, sc).await;
    let mut status = sc.status.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(answer) => {
            status.last_ok = Some(crate::clock::now_rfc3339());
            status.last_error = None;
            status.held = Some(answer.held);
            status.policies_current = Some(answer.policies_current);
        }
        Err(e) => {
            if status.last_error.as_deref() != Some(e.as_str()) {
                tracing::warn!("heartbeat to the control plane failed: {e}");
            }
            status.last_error = Some(e);
        }
    }
}

async fn beat(state: &AppState, sc: &Sidecar) -> Result<HeartbeatAnswer, String> {
    let url = format!(
        "{}/api/v1/sidecars/heartbeat",
        sc.config.gateway_url.as_deref().unwrap_or_default()
    );
    let token = match (&sc.config.token_file, &sc.config.token) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|e| {
            format!(
                "cannot read SIDECAR_AGENT_TOKEN_FILE {}: {e}",
                file.display()
            )
        })?,
        (None, Some(t)) => t.clone(),
        (None, None) => return Err("no agent token to authenticate heartbeats".into()),
    };
    let token = token.trim();
    let audit = &state.audit;
    // The first request (no entries) learns how much the control plane holds; then the
    // entries after that go, LINES_PER_BEAT at a time, each batch with a checkpoint signed
    // over the sidecar's log up to its last entry.
    let mut held: Option<u64> = None;
    loop {
        let (req, full) = signed_request(
            &state.audit,
            &state.policies,
            sc,
            held,
            LINES_PER_BEAT,
            BYTES_PER_BEAT,
        )
        .await?;
        let sent = req.lines.len();
        let answer = send(state, sc, &url, token, &req).await?;
        let behind = answer.held < audit.reader().durable_size();
        match held {
            Some(from) if answer.held <= from && sent > 0 => {
                return Err(format!(
                    "the control plane still holds {} entries after {sent} more were sent",
                    answer.held
                ));
            }
            _ if !behind || (held.is_some() && !full) => return Ok(answer),
            _ => held = Some(answer.held),
        }
    }
}

/// What a heartbeat (or a hand-carried export) carries: the entries after `from` (none when
/// `from` is None), at most `limit` of them and `max_bytes` of their JSON (at least one), with
/// a checkpoint signed over the sidecar's log up to the last of them; with no entries, over the
/// whole durable log (proving the key, and letting the control plane compare). Also whether it
/// stopped at a limit (more may follow).
async fn signed_request(
    audit: &AuditLog,
    policies: &Policies,
    sc: &Sidecar,
    from: Option<u64>,
    limit: usize,
    max_bytes: usize,
) -> Result<(HeartbeatRequest, bool), String> {
    let policy_digest = policies
        .digest()
        .await
        .map_err(|e| format!("cannot read the sidecar's policies: {e:?}"))?;
    let lines = match from {
        None => Vec::new(),
        Some(from) => {
            let reader = audit.reader();
            // The index fills behind the log: wait (briefly) until it holds every entry durable
            // now, so an export right after a decision carries it.
            tokio::task::spawn_blocking(move || {
                reader.wait_indexed(std::time::Duration::from_secs(2));
                reader.export(None, from, limit)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot read the sidecar's audit log: {e}"))?
        }
    };
    let counted = lines.len();
    let lines = within_bytes(lines, max_bytes);
    let full = counted == limit || lines.len() < counted;
    let size = match from {
        None => audit.reader().durable_size(),
        Some(from) => from + lines.len() as u64,
    };
    let reader = audit.reader();
    let root = tokio::task::spawn_blocking(move || reader.root_at(size))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot hash the sidecar's audit log: {e}"))?;
    Ok((
        HeartbeatRequest {
            origin: audit.origin().to_owned(),
            vkey: audit.vkey().to_owned(),
            agent_id: Some(sc.config.agent_id.clone()),
            bundle_version: policies.bundle_version(),
            policy_digest: Some(policy_digest),
            lines,
            checkpoint: Some(
                audit
                    .key()
                    .sign_note(&crate::audit::note::checkpoint_body(
                        audit.origin(),
                        size,
                        &root,
                    ))
                    .map_err(|e| format!("cannot sign the sidecar's checkpoint: {e}"))?,
            ),
        },
        full,
    ))
}

/// The first of `lines` whose JSON fits in `max_bytes` together (always at least one).
fn within_bytes(
    mut lines: Vec<meshguard_api::AuditExportLine>,
    max_bytes: usize,
) -> Vec<meshguard_api::AuditExportLine> {
    let mut total = 0;
    let keep = lines
        .iter()
        .position(|l| {
            total += serde_json::to_string(l).map_or(0, |t| t.len()) + 1;
            total > max_bytes
        })
        .unwrap_or(lines.len())
        .max(1);
    lines.truncate(keep);
    lines
}

/// `GET /sidecar/export?after=N` on a sidecar (its loopback): its entries after N with a
/// checkpoint signed by its key, as a heartbeat carries them, for a disconnected sidecar's log
/// to be carried by hand to the control plane's `POST /admin/audit/ingest`.
pub(crate) async fn export(
    State(sidecar): State<Option<Arc<Sidecar>>>,
    State(audit): State<AuditLog>,
    State(policies): State<Policies>,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let Some(sc) = sidecar.as_deref() else {
        return Err(ApiError::not_found("route", "/sidecar/export"));
    };
    let (req, _) = signed_request(
        &audit,
        &policies,
        sc,
        Some(q.after.unwrap_or(0)),
        100_000,
        usize::MAX,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(req).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    after: Option<u64>,
}

/// One heartbeat request; a revocation is learnt before the error is returned.
async fn send(
    state: &AppState,
    sc: &Sidecar,
    url: &str,
    token: &str,
    req: &HeartbeatRequest,
) -> Result<HeartbeatAnswer, String> {
    let resp = state
        .upstream
        .post(url)
        .bearer_auth(token)
        .json(req)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if status == StatusCode::FORBIDDEN
        && serde_json::from_slice::<Value>(&body)
            .ok()
            .is_some_and(|v| v["error"] == "agent_revoked")
    {
        let mut view = agent_view(&sc.agent());
        view.revoked_at = Some(crate::clock::now_rfc3339());
        sc.learn(&view);
        return Err("the control plane says this agent is revoked".into());
    }
    if !status.is_success() {
        let shown = String::from_utf8_lossy(&body);
        return Err(format!(
            "{url} answered {status}: {}",
            shown.chars().take(300).collect::<String>()
        ));
    }
    let answer: HeartbeatAnswer =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not a heartbeat answer: {e}"))?;
    sc.learn(&answer.agent);
    Ok(answer)
}

/// An error and its causes on one line (reqwest's own text omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn agent_view(a: &AgentRecord) -> AgentView {
    AgentView {
        id: a.id.clone(),
        name: a.name.clone(),
        trust_tier: a.trust_tier.clone(),
        tags: a.tags.clone(),
        revoked_at: a.revoked_at.clone(),
    }
}

// ---- the sidecar's own endpoints ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnforceRequest {
    #[serde(default, alias = "agent_id")]
    agent_id: Option<String>,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

/// The agent a call names must be this sidecar's (an absent id means it).
fn check_agent(state: &AppState, named: Option<&str>) -> Result<Arc<AgentRecord>, ApiError> {
    let sc = state
        .sidecar
        .as_ref()
        .ok_or_else(|| ApiError::not_found("route", "/enforce"))?;
    let agent = sc.agent();
    if let Some(id) = named
        && id != agent.id
    {
        return Err(ApiError::field(
            "agentId",
            format!(
                "this sidecar governs agent {} only; send its id, or none",
                agent.id
            ),
        ));
    }
    Ok(agent)
}

/// `POST /enforce`: the Guardian decision contract.
pub(crate) async fn enforce(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let req: EnforceRequest = parse_json(&bytes)?;
    if req.action.trim().is_empty() {
        return Err(ApiError::field("action", "must not be empty"));
    }
    let agent = check_agent(&state, req.agent_id.as_deref())?;
    let ask = Ask {
        action: req.action.clone(),
        resource: req.resource,
        method: Some("POST".to_owned()),
        path: Some("/enforce".to_owned()),
        context: req.context,
        trace_id: trace_id(&headers),
        delegated_by: Vec::new(),
        delegators_ok: Ok(()),
        narrowed: None,
    };
    if agent.revoked_at.is_some() {
        let refused = crate::routes::proxy::Refused {
            why: "token of a revoked agent",
            claimed: Some(agent.id.clone()),
        };
        return Ok(crate::routes::proxy::unauthorized(&state, &ask, refused).await);
    }
    let v = govern(&state, &agent, &ask).await;
    let mut body = json!({
        "decision": if v.allowed { "allow" } else { "deny" },
        "latencyMs": v.latency.as_secs_f64() * 1000.0,
        "mode": v.mode.as_str(),
        "traceId": ask.trace_id,
    });
    if let Some(b) = state.policies.bundle_version() {
        body["bundleVersion"] = json!(b);
    }
    if let Some(p) = &v.policy {
        body["policy"] = json!(p);
    }
    if let Some(r) = &v.rule {
        body["rule"] = json!(r);
    }
    if !v.allowed || v.would_deny {
        body["reason"] = json!(v.reason);
    }
    if v.would_deny {
        body["wouldDeny"] = json!(true);
    }
    if let Some(limited) = &v.rate_limited {
        return Ok(crate::routes::proxy::too_many(limited, &ask.trace_id));
    }
    Ok(Json(body).into_response())
}

/// `POST /enforce/batch`: the batch endpoint's evaluation, in the Guardian's answer shape.
pub(crate) async fn enforce_batch(
    State(state): State<AppState>,
    connected: axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    client_cert: Option<axum::Extension<crate::tls::ClientCert>>,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Named {
        #[serde(default, alias = "agent_id")]
        agent_id: Option<String>,
    }
    let named: Named = parse_json(&bytes)?;
    check_agent(&state, named.agent_id.as_deref())?;
    let answer = crate::routes::batch::batch(
        State(state.clone()),
        connected,
        headers,
        client_cert,
        RawBody(bytes),
    )
    .await?;
    if answer.status() != StatusCode::OK {
        return Ok(answer);
    }
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    let mut v: Value = serde_json::from_slice(&body).map_err(ApiError::internal)?;
    let all = v["results"]
        .as_array()
        .is_some_and(|r| r.iter().all(|x| x["decision"] == "allow"));
    v["allAllowed"] = json!(all);
    if let Some(b) = state.policies.bundle_version() {
        v["bundleVersion"] = json!(b);
    }
    v["mode"] = json!(state.config.mode.as_str());
    Ok(Json(v).into_response())
}

/// The sidecar's `/health`: reachable only from its pod, so it says what a probe and an
/// operator inside the pod need: the agent, the bundle, the heartbeats.
pub(crate) async fn health(
    State(sidecar): State<Option<Arc<Sidecar>>>,
    State(db): State<Db>,
    State(policies): State<Policies>,
    State(config): State<Arc<crate::config::Config>>,
    State(audit): State<AuditLog>,
) -> Response {
    let ping = db.run(|s| s.ping()).await;
    let Some(sc) = sidecar.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let agent = sc.agent();
    let healthy = ping.is_ok() && policies.bundle_version().is_some();
    let mut body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": crate::clock::now_rfc3339(),
        "role": "sidecar",
        "agentId": agent.id,
        "revoked": agent.revoked_at.is_some(),
        "mode": config.mode.as_str(),
        "origin": audit.origin(),
        "heartbeat": sc.status(),
    });
    if let Some(v) = policies.bundle_version() {
        body["bundleVersion"] = json!(v);
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

// ---- the control plane's side ----

/// `POST /api/v1/sidecars/heartbeat`, with the agent's token: registers the sidecar's origin
/// and key on first contact, ingests its entries once they prove to be the log its key signed,
/// and answers with the agent's record.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized", "message": "Invalid or expired token"})),
        )
            .into_response()
    };
    let Some(claims) = bearer(&headers).and_then(|t| state.tokens.verify(t).ok()) else {
        return Ok(unauthorized());
    };
    let Some(agent) = state.db.agent(&claims.sub).await? else {
        return Ok(unauthorized());
    };
    if agent.revoked_at.is_some() {
        return Ok((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "agent_revoked", "message": format!("agent {} is revoked; its sidecar refuses every call", agent.id)})),
        )
            .into_response());
    }
    if agent.token_version != claims.ver {
        return Ok(unauthorized());
    }
    if state.sidecar.is_some() {
        return Err(ApiError::not_found("route", "/api/v1/sidecars/heartbeat"));
    }
    let req: HeartbeatRequest = parse_json(&bytes)?;
    let policy_digest = req.policy_digest.clone();
    let (_, held) = accept(&state, &agent, req).await?;
    let ours = state.policies.digest().await?;
    Ok(Json(HeartbeatAnswer {
        agent: agent_view(&agent),
        held,
        policies_current: policy_digest.as_deref() == Some(ours.as_str()),
    })
    .into_response())
}

/// `POST /admin/audit/ingest` of a sidecar's signed export (`GET /sidecar/export`), carried by
/// hand from a disconnected sidecar: the sidecar is registered by its first export (to the
/// agent it names) or its first heartbeat, and its entries are taken only as `accept` takes a
/// heartbeat's. Returns `(entries held before, after)`.
pub(crate) async fn ingest_export(
    state: &AppState,
    req: HeartbeatRequest,
) -> Result<(u64, u64), ApiError> {
    let origin = req.origin.clone();
    let registered = state.db.run(move |s| s.get_sidecar(&origin)).await?;
    let agent_id = match (&registered, &req.agent_id) {
        (Some(r), _) => r.agent_id.clone(),
        (None, Some(a)) => a.clone(),
        (None, None) => {
            return Err(ApiError::field(
                "agentId",
                "the export names no agent and its origin is not registered",
            ));
        }
    };
    let agent = state
        .db
        .agent(&agent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", &agent_id))?;
    if let Some(named) = &req.agent_id
        && *named != agent.id
    {
        return Err(ApiError::conflict(format!(
            "origin {} is registered to agent {}, not {named}",
            req.origin, agent.id
        )));
    }
    accept(state, &agent, req).await
}

/// Registers a sidecar's origin and key on first contact, and ingests its entries once they
/// prove to be the log its key signed. Returns `(entries held before, after)`.
async fn accept(
    state: &AppState,
    agent: &AgentRecord,
    req: HeartbeatRequest,
) -> Result<(u64, u64), ApiError> {
    let signed = proven_checkpoint(state, &req)?;
    let origin = req.origin.clone();
    let registered = state.db.run(move |s| s.get_sidecar(&origin)).await?;
    if let Some(r) = &registered {
        same_agent_and_key(r, agent, &req)?;
    }
    let mut tree = held_tree(state, registered.as_ref(), &req.origin).await?;
    let before = tree.size();
    if req.lines.is_empty() {
        still_the_held_log(&tree, &signed)?;
    } else {
        take_lines(state, agent, &mut tree, &signed, &req).await?;
    }
    let now = crate::clock::now_rfc3339();
    let rec = SidecarRecord {
        origin: req.origin.clone(),
        agent_id: agent.id.clone(),
        vkey: req.vkey.clone(),
        first_seen: registered
            .as_ref()
            .map_or(now.clone(), |r| r.first_seen.clone()),
        last_seen: now,
        bundle_version: req.bundle_version,
        held: tree.size(),
        policy_digest: req.policy_digest.clone(),
        frontier: Some(tree.to_bytes()),
    };
    if registered.is_none() {
        tracing::info!(origin = %rec.origin, agent = %rec.agent_id, "guardian sidecar registered");
    }
    state.db.run(move |s| s.save_sidecar(&rec)).await?;
    Ok((before, tree.size()))
}

/// Proof that the caller holds the key it registers or uses: a checkpoint of its own origin
/// (not this gateway's), signed by the key it names for that origin.
fn proven_checkpoint(
    state: &AppState,
    req: &HeartbeatRequest,
) -> Result<crate::audit::note::Checkpoint, ApiError> {
    if req.origin == state.audit.origin() {
        return Err(ApiError::field(
            "origin",
            "is this gateway's own log origin; a sidecar has an origin of its own",
        ));
    }
    if req.vkey.split('+').next() != Some(req.origin.as_str()) {
        return Err(ApiError::field(
            "vkey",
            format!("does not name the origin {:?}", req.origin),
        ));
    }
    let note = req.checkpoint.as_deref().ok_or_else(|| {
        ApiError::field(
            "checkpoint",
            "required: a checkpoint signed by the sidecar's key",
        )
    })?;
    let signed = crate::audit::note::verify_checkpoint(&req.vkey, note).map_err(|e| {
        ApiError::field(
            "checkpoint",
            format!("not signed by the sidecar's key: {e}"),
        )
    })?;
    if signed.origin != req.origin {
        return Err(ApiError::field(
            "checkpoint",
            format!("is for origin {:?}, not {:?}", signed.origin, req.origin),
        ));
    }
    Ok(signed)
}

/// A registered origin belongs to one agent and one key.
fn same_agent_and_key(
    registered: &SidecarRecord,
    agent: &AgentRecord,
    req: &HeartbeatRequest,
) -> Result<(), ApiError> {
    if registered.agent_id != agent.id {
        return Err(ApiError::conflict(format!(
            "origin {} is registered to agent {}, not {}; a sidecar's origin belongs to one agent",
            registered.origin, registered.agent_id, agent.id
        )));
    }
    if registered.vkey != req.vkey {
        return Err(ApiError::conflict(format!(
            "origin {} is registered with another key; its entries are accepted only signed by that key (a sidecar that lost its cache starts a new origin)",
            registered.origin
        )));
    }
    Ok(())
}

/// The tree of this origin's entries held so far: the frontier its row keeps, or (a row from
/// before frontiers were kept, or entries with no row) rebuilt once from the entries.
async fn held_tree(
    state: &AppState,
    registered: Option<&SidecarRecord>,
    origin: &str,
) -> Result<merkle::Frontier, ApiError> {
    if let Some(kept) =
        registered.and_then(|r| merkle::Frontier::from_bytes(r.held, r.frontier.as_deref()?))
    {
        return Ok(kept);
    }
    let reader = state.audit.reader();
    let origin = origin.to_owned();
    let leaves = tokio::task::spawn_blocking(move || reader.source_leaves(&origin))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut t = merkle::Frontier::default();
    leaves.into_iter().for_each(|l| t.push(l));
    Ok(t)
}

/// A heartbeat without lines: its checkpoint must not be shorter than what is held, nor, at
/// the same size, a different log.
fn still_the_held_log(
    tree: &merkle::Frontier,
    signed: &crate::audit::note::Checkpoint,
) -> Result<(), ApiError> {
    let before = tree.size();
    if signed.size < before {
        return Err(ApiError::conflict(format!(
            "the sidecar's log ({} entries) is shorter than what this gateway holds of it ({before}): it was reset; give the sidecar a new cache (a new origin)",
            signed.size
        )));
    }
    if signed.size == before && tree.root() != signed.root {
        return Err(ApiError::conflict(format!(
            "the sidecar's log of {} entries is not the one this gateway holds: its history was rewritten",
            signed.size
        )));
    }
    Ok(())
}

/// Checks every line is the sidecar's own (a forged one is recorded and refuses them all),
/// that the held entries and the new ones rebuild the signed checkpoint, and ingests the new.
async fn take_lines(
    state: &AppState,
    agent: &AgentRecord,
    tree: &mut merkle::Frontier,
    signed: &crate::audit::note::Checkpoint,
    req: &HeartbeatRequest,
) -> Result<(), ApiError> {
    let before = tree.size();
    for (i, line) in req.lines.iter().enumerate() {
        if let Err((field, why)) = own_line(i, line, &req.origin, agent) {
            forged(state, agent, &req.origin, &why).await;
            return Err(ApiError::field(&field, why));
        }
        // Entries already held come again after a lost answer; they are skipped.
        if line.seq > tree.size() {
            tree.push(merkle::leaf_hash(
                crate::audit::canonical(&line.entry).as_bytes(),
            ));
        }
    }
    if signed.size != tree.size() || tree.root() != signed.root {
        return Err(ApiError::field(
            "lines",
            format!(
                "do not rebuild the log the sidecar signed (checkpoint of {} entries; the held entries and these make {}); nothing was ingested",
                signed.size,
                tree.size()
            ),
        ));
    }
    if tree.size() > before {
        let lines: Vec<_> = req
            .lines
            .iter()
            .filter(|l| l.seq > before)
            .cloned()
            .collect();
        state.audit.ingest(lines).await.map_err(|e| match e {
            crate::audit::AuditError::Write(m) => ApiError::conflict(m),
            other => ApiError::internal(other),
        })?;
    }
    Ok(())
}

/// Checks that a line a sidecar sends is its own: from its origin, and about its agent (an
/// entry that names an agent must name the one whose token sent it; a decision must name one).
fn own_line(
    i: usize,
    line: &meshguard_api::AuditExportLine,
    origin: &str,
    agent: &AgentRecord,
) -> Result<(), (String, String)> {
    if line.source != origin {
        return Err((
            format!("lines[{i}].source"),
            format!(
                "is {:?}; a sidecar sends the entries of its own origin {origin:?} only",
                line.source
            ),
        ));
    }
    let named = line.entry.get("agentId");
    let event = line.entry.get("event").and_then(Value::as_str);
    match named {
        Some(Value::String(id)) if *id == agent.id => Ok(()),
        None if event != Some("decision") => Ok(()),
        None => Err((
            format!("lines[{i}].entry.agentId"),
            format!(
                "is missing from a decision; a sidecar's decisions are those of its agent {}",
                agent.id
            ),
        )),
        Some(other) => Err((
            format!("lines[{i}].entry.agentId"),
            format!(
                "is {other}; the sidecar of agent {} may only send entries about that agent",
                agent.id
            ),
        )),
    }
}

/// A sidecar sent an entry that is not its own: recorded as a bypass attempt of its agent,
/// which raises a critical alert. Nothing of the heartbeat is ingested.
async fn forged(state: &AppState, agent: &AgentRecord, origin: &str, why: &str) {
    tracing::warn!(agent = %agent.id, origin, reason = why, "a sidecar sent an entry that is not its own");
    let ask = crate::governance::Ask {
        action: "sidecar:heartbeat".to_owned(),
        resource: Some(origin.to_owned()),
        method: Some("POST".to_owned()),
        path: Some("/api/v1/sidecars/heartbeat".to_owned()),
        context: None,
        trace_id: crate::ids::new_id("trace"),
        delegated_by: Vec::new(),
        delegators_ok: Ok(()),
        narrowed: None,
    };
    crate::governance::record_refusal(
        state,
        &ask,
        "bypass_attempt",
        &format!("sidecar heartbeat refused: {why}"),
        Some(agent.id.clone()),
        Some((agent.name.clone(), agent.trust_tier.clone())),
    )
    .await;
}

/// `GET /admin/sidecars`: every registered sidecar, when it was last heard from and what it
/// enforces.
pub(crate) async fn list(
    _: Admin,
    State(db): State<Db>,
    State(policies): State<Policies>,
) -> Result<Response, ApiError> {
    let rows = db.run(|s| s.list_sidecars()).await?;
    let now = chrono::Utc::now();
    let ours = policies.digest().await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let age = chrono::DateTime::parse_from_rfc3339(&r.last_seen)
                .ok()
                .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0));
            let mut row = json!({
                "origin": r.origin,
                "agentId": r.agent_id,
                "vkey": r.vkey,
                "firstSeen": r.first_seen,
                "lastSeen": r.last_seen,
                "policiesCurrent": r.policy_digest.as_deref() == Some(ours.as_str()),
                "entriesHeld": r.held,
            });
            if let Some(age) = age {
                row["secondsSinceLastSeen"] = json!(age);
            }
            if let Some(v) = r.bundle_version {
                row["bundleVersion"] = json!(v);
            }
            row
        })
        .collect();
    Ok(Json(json!({ "sidecars": items, "policyDigest": ours })).into_response())
}
