//! `/admin/policies`: create, read, update, delete, validate and test policy documents.
//!
//! Content is stored and returned byte for byte. A policy is addressed by id (`policy_…`, or
//! `file_…` for `POLICIES_DIR` policies) or by name. File policies are read-only here (409), and an
//! API policy may not take a file policy's name (409).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use meshguard_api::{
    CreatePolicy, Policy, PolicyList, PolicyRuleSummary, TrustTier, ValidationIssue,
    ValidationReport,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::{RawBody, parse_json};
use super::changes::{Draft, digest};
use crate::audit::AuditLog;
use crate::auth::{Admin, ChangeMeta};
use crate::config::Config;
use crate::error::ApiError;
use crate::policy::{
    EvalRequest, Outcome, ParsedPolicy, PolicyDoc, PolicySet, evaluate, parse_policy,
};
use crate::policy_files::FilePolicy;
use crate::state::{AppState, BundleSigning, Db, Policies};
use crate::store::{PolicyRecord, Write};

/// What a policy write uses: the store, the policies in force (rebuilt after the write) and
/// the configuration (change approval).
#[derive(Clone, Debug)]
pub(super) struct Writes {
    db: Db,
    policies: Policies,
    config: Arc<Config>,
}

impl FromRef<AppState> for Writes {
    fn from_ref(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            policies: state.policies.clone(),
            config: Arc::clone(&state.config),
        }
    }
}

fn summary(doc: &PolicyDoc) -> Vec<PolicyRuleSummary> {
    doc.rules
        .iter()
        .map(|r| {
            let actions: Vec<String> = r.actions.iter().map(|p| p.as_str().to_owned()).collect();
            PolicyRuleSummary {
                id: r.id.clone(),
                name: r.id.clone(),
                effect: r.effect.as_str().to_owned(),
                action: actions.first().cloned(),
                actions,
            }
        })
        .collect()
}

fn api_view(p: &PolicyRecord) -> Policy {
    let parsed = parse_policy(&p.content);
    let doc = parsed.doc.as_ref();
    Policy {
        id: p.id.clone(),
        name: p.name.clone(),
        version: doc.and_then(|d| d.version.clone()),
        description: doc.and_then(|d| d.description.clone()),
        content: p.content.clone(),
        digest: digest(p.content.as_bytes()),
        source: "api".to_owned(),
        read_only: false,
        active: doc.is_some(),
        default_effect: doc.map_or("deny", |d| d.default_effect.as_str()).to_owned(),
        rules: doc.map(summary).unwrap_or_default(),
        revision: p.revision,
        created_at: p.created_at.clone(),
        updated_at: p.updated_at.clone(),
    }
}

fn file_view(f: &FilePolicy) -> Policy {
    Policy {
        id: f.id.clone(),
        name: f.name.clone(),
        version: f.doc.version.clone(),
        description: f.doc.description.clone(),
        content: f.content.clone(),
        digest: digest(f.content.as_bytes()),
        source: "file".to_owned(),
        read_only: true,
        active: true,
        default_effect: f.doc.default_effect.as_str().to_owned(),
        rules: summary(&f.doc),
        revision: 1,
        created_at: f.loaded_at.clone(),
        updated_at: f.loaded_at.clone(),
    }
}

/// The change-record view of a policy: everything but the bookkeeping.
fn record_json(p: &PolicyRecord) -> Value {
    json!({"id": p.id, "name": p.name, "content": p.content})
}

enum Found {
    Api(PolicyRecord),
    File(FilePolicy),
}

async fn find(db: &Db, policies: &Policies, key: &str) -> Result<Found, ApiError> {
    let files = policies.files();
    if let Some(f) = files.iter().find(|f| f.id == key) {
        return Ok(Found::File(f.clone()));
    }
    let k = key.to_owned();
    if let Some(p) = db.run(move |s| s.get_policy(&k)).await? {
        return Ok(Found::Api(p));
    }
    let k = key.to_owned();
    if let Some(p) = db.run(move |s| s.get_policy_by_name(&k)).await? {
        return Ok(Found::Api(p));
    }
    if let Some(f) = files.iter().find(|f| f.name == key) {
        return Ok(Found::File(f.clone()));
    }
    Err(ApiError::not_found("policy", key))
}

fn read_only(f: &FilePolicy) -> ApiError {
    ApiError::conflict(format!(
        "policy {:?} is loaded from {} and is read-only through the API; edit the file instead",
        f.name,
        f.path.display()
    ))
}

fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| {
            matches!(
                ct.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

/// The policy content and the name given beside it, from a YAML body, a `{name, content}` JSON
/// body, or a JSON policy object.
fn policy_input(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(Option<String>, Option<String>), ApiError> {
    if is_yaml(headers) {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::bad_request("policy content must be UTF-8 text"))?;
        return Ok((None, Some(text.to_owned())));
    }
    let body: CreatePolicy = parse_json(bytes)?;
    if body.content.is_some() {
        return Ok((body.name, body.content));
    }
    if body.document.is_empty() {
        return Ok((body.name, None));
    }
    let mut document = Map::new();
    if let Some(name) = &body.name {
        document.insert("name".to_owned(), Value::String(name.clone()));
    }
    document.extend(body.document);
    let text =
        serde_json::to_string_pretty(&Value::Object(document)).expect("JSON values serialize");
    Ok((body.name, Some(text)))
}

fn checked(content: &str) -> Result<(PolicyDoc, ParsedPolicy), ApiError> {
    let parsed = parse_policy(content);
    match &parsed.doc {
        Some(doc) => Ok((doc.clone(), parsed)),
        None => Err(ApiError::invalid_policy(parsed.errors)),
    }
}

fn resolve_name(given: Option<&str>, inner: Option<&str>) -> Result<String, ApiError> {
    let name = match (given, inner) {
        (Some(g), Some(i)) if g != i => {
            return Err(ApiError::field(
                "name",
                format!(
                    "{g:?} does not match the name inside content ({i:?}); make them equal or remove name from the content"
                ),
            ));
        }
        (Some(n), _) | (None, Some(n)) => n.to_owned(),
        (None, None) => {
            return Err(ApiError::field(
                "name",
                "missing; give name in the request or in the policy content",
            ));
        }
    };
    if name.trim().is_empty() || name.chars().count() > 256 {
        return Err(ApiError::field("name", "must be 1 to 256 characters"));
    }
    if name.starts_with("policy_") || name.starts_with("file_") {
        return Err(ApiError::field(
            "name",
            "must not start with policy_ or file_, which are reserved for ids",
        ));
    }
    Ok(name)
}

fn check_not_file_name(policies: &Policies, name: &str) -> Result<(), ApiError> {
    match policies.files().iter().find(|f| f.name == name) {
        Some(f) => Err(ApiError::conflict(format!(
            "the name {name:?} belongs to the policy file {}; choose another name",
            f.path.display()
        ))),
        None => Ok(()),
    }
}

pub(super) async fn list(
    _: Admin,
    State(db): State<Db>,
    State(in_force): State<Policies>,
) -> Result<Json<PolicyList>, ApiError> {
    let stored = db.run(|s| s.list_policies()).await?;
    let mut policies: Vec<Policy> = stored.iter().map(api_view).collect();
    policies.extend(in_force.files().iter().map(file_view));
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(PolicyList { policies }))
}

pub(super) async fn get(
    _: Admin,
    State(db): State<Db>,
    State(policies): State<Policies>,
    Path(key): Path<String>,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(match find(&db, &policies, &key).await? {
        Found::Api(p) => api_view(&p),
        Found::File(f) => file_view(&f),
    }))
}

pub(super) async fn create(
    _: Admin,
    State(Writes {
        db,
        policies,
        config,
    }): State<Writes>,
    meta: ChangeMeta,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    approved(&config, &meta)?;
    if let Some(id) = super::changes::replayed(&db, &meta, "policy").await? {
        return created_again(&db, &id).await;
    }
    let (given, content) = policy_input(&headers, &bytes)?;
    let content = content
        .ok_or_else(|| ApiError::field("content", "missing; send the policy YAML as content"))?;
    let (doc, _) = checked(&content)?;
    let name = resolve_name(given.as_deref(), doc.name.as_deref())?;
    check_not_file_name(&policies, &name)?;
    let now = crate::clock::now_rfc3339();
    let rec = PolicyRecord {
        id: crate::ids::new_id("policy"),
        name,
        content,
        revision: 1,
        created_at: now.clone(),
        updated_at: now,
    };
    let change = Draft {
        kind: "policy",
        operation: "create",
        object_id: &rec.id,
        object_name: Some(&rec.name),
        before: None,
        after: Some(record_json(&rec)),
        old_digest: None,
        new_digest: Some(digest(rec.content.as_bytes())),
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let change_id = change.id.clone();
    let saved = rec.clone();
    let saved = db
        .run(move |s| s.save_policy(&saved, Write::Insert, &change))
        .await;
    if let Some(id) = super::changes::or_replayed(&db, &meta, "policy", saved).await? {
        return created_again(&db, &id).await;
    }
    deploy(&db, &policies, change_id).await?;
    tracing::info!(policy = %rec.name, id = %rec.id, approver = ?meta.approver, ticket = ?meta.change_ticket, "policy created");
    Ok((StatusCode::CREATED, Json(api_view(&rec))))
}

/// The answer to a create sent again with its `Idempotency-Key`: the policy the first made.
async fn created_again(db: &Db, id: &str) -> Result<(StatusCode, Json<Policy>), ApiError> {
    let key = id.to_owned();
    let rec = db
        .run(move |s| s.get_policy(&key))
        .await?
        .ok_or_else(|| ApiError::not_found("policy", id))?;
    Ok((StatusCode::CREATED, Json(api_view(&rec))))
}

pub(super) async fn update(
    _: Admin,
    State(Writes {
        db,
        policies,
        config,
    }): State<Writes>,
    Path(key): Path<String>,
    meta: ChangeMeta,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Json<Policy>, ApiError> {
    approved(&config, &meta)?;
    let (given, content) = policy_input(&headers, &bytes)?;
    if given.is_none() && content.is_none() {
        return Err(ApiError::field(
            "content",
            "missing; send the new policy YAML as content (and name to rename)",
        ));
    }
    let current = match find(&db, &policies, &key).await? {
        Found::File(f) => return Err(read_only(&f)),
        Found::Api(p) => p,
    };
    let content = content.unwrap_or_else(|| current.content.clone());
    let (doc, _) = checked(&content)?;
    let name = resolve_name(
        Some(given.as_deref().unwrap_or(&current.name)),
        doc.name.as_deref(),
    )?;
    check_not_file_name(&policies, &name)?;
    let next = PolicyRecord {
        name,
        content,
        revision: current.revision + 1,
        updated_at: crate::clock::now_rfc3339(),
        ..current.clone()
    };
    let change = Draft {
        kind: "policy",
        operation: "update",
        object_id: &next.id,
        object_name: Some(&next.name),
        before: Some(record_json(&current)),
        after: Some(record_json(&next)),
        old_digest: Some(digest(current.content.as_bytes())),
        new_digest: Some(digest(next.content.as_bytes())),
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let change_id = change.id.clone();
    let saved = next.clone();
    let expected = current.revision;
    db.run(move |s| s.save_policy(&saved, Write::Update { expected }, &change))
        .await?;
    deploy(&db, &policies, change_id).await?;
    tracing::info!(policy = %next.name, id = %next.id, revision = next.revision, approver = ?meta.approver, ticket = ?meta.change_ticket, "policy updated");
    Ok(Json(api_view(&next)))
}

pub(super) async fn delete(
    _: Admin,
    State(Writes {
        db,
        policies,
        config,
    }): State<Writes>,
    Path(key): Path<String>,
    meta: ChangeMeta,
) -> Result<Json<Value>, ApiError> {
    approved(&config, &meta)?;
    let current = match find(&db, &policies, &key).await? {
        Found::File(f) => return Err(read_only(&f)),
        Found::Api(p) => p,
    };
    let change = Draft {
        kind: "policy",
        operation: "delete",
        object_id: &current.id,
        object_name: Some(&current.name),
        before: Some(record_json(&current)),
        after: None,
        old_digest: Some(digest(current.content.as_bytes())),
        new_digest: None,
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let change_id = change.id.clone();
    let saved = current.clone();
    let expected = current.revision;
    db.run(move |s| s.save_policy(&saved, Write::Delete { expected }, &change))
        .await?;
    deploy(&db, &policies, change_id).await?;
    tracing::info!(policy = %current.name, id = %current.id, "policy deleted");
    Ok(Json(
        json!({"status": "deleted", "id": current.id, "name": current.name}),
    ))
}

/// Rebuilds the engine's snapshot from the store, then records in the change when the write
/// took effect: from here on decisions use it. A snapshot that cannot be rebuilt leaves the
/// change without `deployedAt`, which is the truth.
/// With `CHANGE_APPROVAL_REQUIRED` or a signed approver list (`CHANGE_APPROVERS`), a policy
/// change names its approver and its ticket; with the list, the approver must be on it.
fn approved(config: &Config, meta: &ChangeMeta) -> Result<(), ApiError> {
    let list = config.change_approvers.as_ref();
    if !config.change_approval_required && list.is_none() {
        return Ok(());
    }
    let missing: Vec<&str> = [
        ("X-MeshGuard-Approver", meta.approver.is_none()),
        ("X-MeshGuard-Change-Ticket", meta.change_ticket.is_none()),
    ]
    .into_iter()
    .filter_map(|(h, m)| m.then_some(h))
    .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::PRECONDITION_REQUIRED,
            "approval_required",
            format!(
                "policy changes need supervisory approval here: send {} with the change; nothing was changed",
                missing.join(" and ")
            ),
        ));
    }
    match (list, meta.approver.as_deref()) {
        (Some(list), Some(approver)) if !list.names(approver) => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "approver_not_listed",
            format!(
                "{approver:?} is not on the site's signed change approver list (version {}); a listed approver must approve the change; nothing was changed",
                list.version()
            ),
        )),
        _ => Ok(()),
    }
}

async fn deploy(db: &Db, policies: &Policies, change_id: String) -> Result<(), ApiError> {
    policies.reload().await?;
    let at = crate::clock::now_rfc3339();
    db.run(move |s| s.mark_deployed(&change_id, &at)).await?;
    Ok(())
}

/// Checks a document without storing it. With `name` beside `content` (as the Terraform
/// provider sends at plan time), the name rules of a create are checked too.
pub(super) async fn validate(
    _: Admin,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let (given, content) = policy_input(&headers, &bytes)?;
    let content = content.ok_or_else(|| {
        ApiError::field(
            "content",
            "missing; send the policy YAML as content, or the policy as a JSON object",
        )
    })?;
    let mut parsed = parse_policy(&content);
    if let (Some(given), Some(doc)) = (given.as_deref(), parsed.doc.as_ref())
        && let Err(e) = resolve_name(Some(given), doc.name.as_deref())
    {
        parsed.errors.push(ValidationIssue {
            path: "name".to_owned(),
            line: None,
            message: e.message().to_owned(),
        });
    }
    let report = ValidationReport {
        valid: parsed.doc.is_some() && parsed.errors.is_empty(),
        errors: parsed.errors,
        warnings: parsed.warnings,
    };
    let status = if report.valid {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, Json(report)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TestRequest {
    /// A policy object, or its YAML as a string. Absent: test against the active policies.
    #[serde(default)]
    policy: Option<Value>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default, alias = "agent_id")]
    agent_id: Option<String>,
    #[serde(default)]
    agent: Option<TestAgent>,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TestAgent {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, alias = "trust_tier")]
    trust_tier: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

pub(super) async fn test(
    _: Admin,
    State(db): State<Db>,
    State(policies): State<Policies>,
    RawBody(bytes): RawBody,
) -> Result<Json<Value>, ApiError> {
    let req: TestRequest = parse_json(&bytes)?;
    if req.action.trim().is_empty() {
        return Err(ApiError::field(
            "action",
            "must not be empty; give an action such as read:contacts",
        ));
    }
    let content = match (&req.content, &req.policy) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(Value::String(s))) => Some(s.clone()),
        (None, Some(obj @ Value::Object(_))) => {
            Some(serde_json::to_string_pretty(obj).expect("JSON values serialize"))
        }
        (None, Some(_)) => {
            return Err(ApiError::field(
                "policy",
                "expected a policy object or its YAML as a string",
            ));
        }
        (None, None) => None,
    };
    let set = match content {
        Some(c) => {
            let (doc, _) = checked(&c)?;
            let name = doc.name.clone().unwrap_or_else(|| "test".to_owned());
            Arc::new(PolicySet::new(0, vec![(name, Arc::new(doc))]))
        }
        None => policies.snapshot(),
    };
    let stored = match &req.agent_id {
        Some(id) => db.active_agent(id).await?,
        None => None,
    };
    let given = req.agent.unwrap_or_default();
    let agent_id = req
        .agent_id
        .clone()
        .unwrap_or_else(|| "agent_test".to_owned());
    let name = given
        .name
        .or_else(|| stored.as_ref().map(|a| a.name.clone()))
        .unwrap_or_else(|| agent_id.clone());
    let tier_text = given
        .trust_tier
        .or_else(|| stored.as_ref().map(|a| a.trust_tier.clone()))
        .unwrap_or_else(|| "verified".to_owned());
    let tier = TrustTier::parse(&tier_text)
        .map_err(|e| ApiError::field("agent.trustTier", e.to_string()))?;
    let tags = if given.tags.is_empty() {
        stored.map(|a| a.tags.clone()).unwrap_or_default()
    } else {
        given.tags
    };
    let decision = evaluate(
        &set,
        &EvalRequest {
            agent_id: &agent_id,
            agent_name: &name,
            tier,
            tags: &tags,
            action: &req.action,
            resource: req.resource.as_deref(),
            context: req.context.as_ref(),
        },
    );
    let allowed = decision.outcome == Outcome::Allow;
    let mut body = json!({
        "decision": if allowed { "allow" } else { "deny" },
        "allowed": allowed,
        "action": req.action,
        "agentId": agent_id,
        "reason": decision.reason,
    });
    if let Some(p) = decision.policy {
        body["policy"] = Value::String(p);
    }
    if let Some(r) = decision.rule {
        body["rule"] = Value::String(r);
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
pub(super) struct VersionsQuery {
    /// A timestamp: answer only the snapshot that was active then.
    at: Option<String>,
}

/// The retained policy snapshots (`POLICY_VERSION_LIMIT`), or the one active at `?at=`.
pub(super) async fn versions(
    _: Admin,
    State(policies): State<Policies>,
    axum::extract::Query(q): axum::extract::Query<VersionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let history = policies.history();
    let Some(at) = q.at else {
        return Ok(Json(
            json!({ "active": policies.snapshot().version, "versions": history }),
        ));
    };
    let at = chrono::DateTime::parse_from_rfc3339(&at)
        .map_err(|_| {
            ApiError::field(
                "at",
                "expected an RFC 3339 timestamp such as 2026-01-25T18:00:00Z",
            )
        })?
        .with_timezone(&chrono::Utc);
    let active = history
        .iter()
        .rev()
        .find(|r| chrono::DateTime::parse_from_rfc3339(&r.activated_at).is_ok_and(|t| t <= at))
        .ok_or_else(|| ApiError::not_found("policy snapshot active at", &at.to_rfc3339()))?;
    Ok(Json(
        serde_json::to_value(active).expect("records serialize"),
    ))
}

/// The active policy set as a signed bundle for disconnected sidecars: write `bundle` to
/// `policy-bundle.json` and `minisig` to `policy-bundle.json.minisig`; `minisign -Vm
/// policy-bundle.json -p key.pub` checks it with the stock tool, and a gateway started with
/// `POLICY_BUNDLE` and `POLICY_BUNDLE_PUBKEY` loads it only if it verifies.
pub(super) async fn bundle(
    _: Admin,
    State(db): State<Db>,
    State(in_force): State<Policies>,
    State(audit): State<AuditLog>,
    State(signing): State<Arc<BundleSigning>>,
) -> Result<Json<Value>, ApiError> {
    use crate::bundle::{Bundle, BundlePolicy, FORMAT};
    let stored = db.run(|s| s.list_policies()).await?;
    let mut policies: Vec<BundlePolicy> = stored
        .into_iter()
        .filter(|p| parse_policy(&p.content).doc.is_some())
        .map(|p| BundlePolicy {
            digest: digest(p.content.as_bytes()),
            name: p.name,
            content: p.content,
        })
        .collect();
    policies.extend(in_force.files().iter().map(|f| BundlePolicy {
        name: f.name.clone(),
        digest: digest(f.content.as_bytes()),
        content: f.content.clone(),
    }));
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let version = in_force.snapshot().version;
    let b = Bundle {
        format: FORMAT.to_owned(),
        version,
        created_at: crate::clock::now_rfc3339(),
        origin: audit.origin().to_owned(),
        policies,
    };
    let mut bytes = serde_json::to_vec_pretty(&b).expect("bundles serialize");
    bytes.push(b'\n');
    let key = signing.key.as_deref().ok_or_else(|| {
        ApiError::conflict("this gateway has no policy-bundle key (a sidecar exports no bundles)")
    })?;
    let trusted = format!(
        "timestamp:{}\tfile:policy-bundle.json\tversion:{version}",
        chrono::Utc::now().timestamp()
    );
    let minisig = crate::bundle::sign(key, &bytes, &trusted).map_err(ApiError::internal)?;
    let mut body = json!({
        "fileName": "policy-bundle.json",
        "minisig": minisig,
        "publicKey": crate::bundle::public_key(key),
    });
    if let Some(p256) = &signing.p256 {
        let (sig, public) = crate::bundle::sign_p256(p256, &bytes);
        body["sig"] = sig.into();
        body["cosignPublicKey"] = public.into();
    }
    body["bundle"] = String::from_utf8(bytes).expect("JSON is UTF-8").into();
    Ok(Json(body))
}
