//! `/admin/agents`: register, read, update, revoke agents and re-issue their tokens.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use meshguard_api::{
    Agent, AgentCreated, AgentList, CreateAgent, TokenIssued, TrustTier, UpdateAgent,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::changes::{Draft, digest_json};
use crate::auth::{Admin, ChangeMeta};
use crate::error::ApiError;
use crate::jwt::TokenKeys;
use crate::license::Licensing;
use crate::state::Db;
use crate::store::{AgentRecord, StoreError, Write};
use std::sync::Arc;

const MAX_NAME: usize = 256;

pub(crate) fn view(a: &AgentRecord) -> Agent {
    Agent {
        id: a.id.clone(),
        name: a.name.clone(),
        trust_tier: a.trust_tier.clone(),
        tags: a.tags.clone(),
        metadata: a.metadata.clone(),
        capabilities: a.capabilities.clone(),
        description: a.description.clone(),
        status: if a.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
        created_at: a.created_at.clone(),
        updated_at: a.updated_at.clone(),
        revoked_at: a.revoked_at.clone(),
    }
}

fn view_json(a: &AgentRecord) -> Value {
    serde_json::to_value(view(a)).expect("agents serialize")
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::field("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(ApiError::field(
            "name",
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    Ok(())
}

fn check_tier(tier: &str) -> Result<(), ApiError> {
    TrustTier::parse(tier)
        .map(|_| ())
        .map_err(|e| ApiError::field("trustTier", e.to_string()))
}

fn check_list(field: &str, items: &[String]) -> Result<(), ApiError> {
    match items.iter().position(|t| t.trim().is_empty()) {
        Some(i) => Err(ApiError::field(
            &format!("{field}[{i}]"),
            "must not be empty",
        )),
        None => Ok(()),
    }
}

fn parse_ttl(v: &Value) -> Result<u64, ApiError> {
    let err = || {
        ApiError::field(
            "tokenTtl",
            "expected seconds as a whole number, or a duration such as \"24h\" or \"30d\"; 0 means no expiry",
        )
    };
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(err),
        Value::String(s) => crate::config::parse_duration(s)
            .map(|d| d.as_secs())
            .map_err(|_| err()),
        _ => Err(err()),
    }
}

fn unix_now() -> u64 {
    chrono::Utc::now().timestamp().max(0) as u64
}

fn expiry(exp: Option<u64>) -> Option<String> {
    exp.and_then(|e| chrono::DateTime::from_timestamp(e as i64, 0))
        .map(crate::clock::rfc3339)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    #[serde(alias = "trust_tier")]
    trust_tier: Option<String>,
    /// `active` (default), `revoked` or `all`.
    status: Option<String>,
}

pub(super) async fn list(
    _: Admin,
    State(db): State<Db>,
    Query(q): Query<ListQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let tier = q
        .trust_tier
        .as_deref()
        .map(|t| TrustTier::parse(t).map_err(|e| ApiError::field("trustTier", e.to_string())))
        .transpose()?;
    let status = q.status.as_deref().unwrap_or("active");
    if !["active", "revoked", "all"].contains(&status) {
        return Err(ApiError::field("status", "expected active, revoked or all"));
    }
    let agents = db.run(|s| s.list_agents()).await?;
    let agents = agents
        .iter()
        .filter(|a| match status {
            "active" => a.revoked_at.is_none(),
            "revoked" => a.revoked_at.is_some(),
            _ => true,
        })
        .filter(|a| tier.is_none_or(|t| TrustTier::parse(&a.trust_tier).ok() == Some(t)))
        .map(view)
        .collect();
    Ok(Json(AgentList { agents }))
}

pub(super) async fn create(
    _: Admin,
    State(db): State<Db>,
    State(tokens): State<Arc<TokenKeys>>,
    State(license): State<Arc<Licensing>>,
    meta: ChangeMeta,
    JsonBody(body): JsonBody<CreateAgent>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(id) = super::changes::replayed(&db, &meta, "agent").await? {
        return created_again(&db, &tokens, &id).await;
    }
    check_name(&body.name)?;
    let trust_tier = body.trust_tier.unwrap_or_else(|| "verified".to_owned());
    check_tier(&trust_tier)?;
    check_list("tags", &body.tags)?;
    check_list("capabilities", &body.capabilities)?;
    let token_ttl = body.token_ttl.as_ref().map(parse_ttl).transpose()?;
    let now = crate::clock::now_rfc3339();
    let rec = AgentRecord {
        id: crate::ids::new_id("agent"),
        name: body.name,
        trust_tier,
        tags: body.tags,
        metadata: body.metadata,
        capabilities: body.capabilities,
        description: body.description,
        token_ttl,
        token_version: 1,
        revision: 1,
        created_at: now.clone(),
        updated_at: now,
        revoked_at: None,
    };
    let after = view_json(&rec);
    let change = Draft {
        kind: "agent",
        operation: "create",
        object_id: &rec.id,
        object_name: Some(&rec.name),
        before: None,
        new_digest: Some(digest_json(&after)),
        after: Some(after),
        old_digest: None,
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let (token, exp) = tokens.issue(&rec, unix_now());
    let saved = rec.clone();
    // The store counts the active agents in the insert's own transaction (under the write lock
    // on PostgreSQL), so concurrent creates, on this gateway or others, cannot overshoot.
    let max = license.max_agents();
    let write = max.map_or(Write::Insert, Write::InsertCapped);
    let saved = db
        .run(move |s| match s.save_agent(&saved, write, &change) {
            Err(StoreError::AgentLimit(active)) => Ok(Err(active)),
            other => other.map(Ok),
        })
        .await;
    let saved = match saved {
        Ok(saved) => saved,
        Err(e) => {
            return match super::changes::or_replayed(&db, &meta, "agent", Err(e)).await? {
                Some(id) => created_again(&db, &tokens, &id).await,
                None => unreachable!("or_replayed answers an error it does not settle"),
            };
        }
    };
    if let Err(active) = saved {
        return Err(license.agent_limit(max.unwrap_or(active), active));
    }
    db.remember_agent(&rec);
    tracing::info!(agent = %rec.id, name = %rec.name, tier = %rec.trust_tier, "agent created");
    let body = AgentCreated {
        agent: view(&rec),
        api_key: token.clone(),
        token,
        expires_at: expiry(exp),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// The answer to a create sent again with its `Idempotency-Key`: the agent the first one made,
/// with a token for its current version (the first answer, and its token, may have been lost).
async fn created_again(
    db: &Db,
    tokens: &TokenKeys,
    id: &str,
) -> Result<(StatusCode, Json<AgentCreated>), ApiError> {
    let rec = db
        .agent(id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", id))?;
    if rec.revoked_at.is_some() {
        return Err(ApiError::conflict(format!(
            "this Idempotency-Key made agent {id}, which has been revoked since; send a new key for a new agent"
        )));
    }
    let (token, exp) = tokens.issue(&rec, unix_now());
    Ok((
        StatusCode::CREATED,
        Json(AgentCreated {
            agent: view(&rec),
            api_key: token.clone(),
            token,
            expires_at: expiry(exp),
        }),
    ))
}

/// An active (not revoked) agent, or 404.
async fn active(db: &Db, id: &str) -> Result<Arc<AgentRecord>, ApiError> {
    db.active_agent(id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", id))
}

pub(super) async fn get(
    _: Admin,
    State(db): State<Db>,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(view(active(&db, &id).await?.as_ref())))
}

/// Applies a write to the current version of an agent; retried when another request changed the
/// agent between the read and the write.
async fn modify(
    db: &Db,
    id: &str,
    operation: &'static str,
    meta: &ChangeMeta,
    edit: impl Fn(&mut AgentRecord) -> Result<(), ApiError>,
) -> Result<AgentRecord, ApiError> {
    let mut attempts = 0;
    loop {
        let current = active(db, id).await?;
        let mut next = AgentRecord::clone(&current);
        edit(&mut next)?;
        next.revision = current.revision + 1;
        next.updated_at = crate::clock::now_rfc3339();
        let before = view_json(&current);
        let after = view_json(&next);
        let change = Draft {
            kind: "agent",
            operation,
            object_id: &next.id,
            object_name: Some(&next.name),
            old_digest: Some(digest_json(&before)),
            new_digest: Some(digest_json(&after)),
            before: Some(before),
            after: (operation != "delete").then_some(after),
            hidden_fields: if next.token_version != current.token_version {
                vec!["token"]
            } else {
                Vec::new()
            },
        }
        .build(meta);
        let saved = next.clone();
        let expected = current.revision;
        match db
            .run(move |s| s.save_agent(&saved, Write::Update { expected }, &change))
            .await
        {
            Ok(()) => {
                db.remember_agent(&next);
                return Ok(next);
            }
            Err(e) if attempts < 3 && e.is_stale() => {
                // Another writer won: the cached copy may be stale too.
                db.forget_agent(id);
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn update(
    _: Admin,
    State(db): State<Db>,
    Path(id): Path<String>,
    meta: ChangeMeta,
    JsonBody(body): JsonBody<UpdateAgent>,
) -> Result<Json<Agent>, ApiError> {
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(tier) = &body.trust_tier {
        check_tier(tier)?;
    }
    if let Some(tags) = &body.tags {
        check_list("tags", tags)?;
    }
    if let Some(caps) = &body.capabilities {
        check_list("capabilities", caps)?;
    }
    let updated = modify(&db, &id, "update", &meta, |a| {
        if let Some(v) = &body.name {
            a.name.clone_from(v);
        }
        if let Some(v) = &body.trust_tier {
            a.trust_tier.clone_from(v);
        }
        if let Some(v) = &body.tags {
            a.tags.clone_from(v);
        }
        if let Some(v) = &body.metadata {
            a.metadata.clone_from(v);
        }
        if let Some(v) = &body.capabilities {
            a.capabilities.clone_from(v);
        }
        if let Some(v) = &body.description {
            a.description = Some(v.clone());
        }
        Ok(())
    })
    .await?;
    tracing::info!(agent = %updated.id, "agent updated");
    Ok(Json(view(&updated)))
}

pub(super) async fn revoke(
    _: Admin,
    State(db): State<Db>,
    Path(id): Path<String>,
    meta: ChangeMeta,
) -> Result<Json<Value>, ApiError> {
    let revoked = modify(&db, &id, "delete", &meta, |a| {
        a.revoked_at = Some(crate::clock::now_rfc3339());
        Ok(())
    })
    .await?;
    tracing::info!(agent = %revoked.id, "agent revoked; its tokens are refused from now on");
    Ok(Json(
        json!({"status": "revoked", "id": revoked.id, "revokedAt": revoked.revoked_at}),
    ))
}

pub(super) async fn reissue_token(
    _: Admin,
    State(db): State<Db>,
    State(tokens): State<Arc<TokenKeys>>,
    Path(id): Path<String>,
    meta: ChangeMeta,
) -> Result<Json<TokenIssued>, ApiError> {
    let rotated = modify(&db, &id, "token_reissue", &meta, |a| {
        a.token_version += 1;
        Ok(())
    })
    .await?;
    let (token, exp) = tokens.issue(&rotated, unix_now());
    tracing::info!(agent = %rotated.id, "agent token re-issued; earlier tokens are refused");
    Ok(Json(TokenIssued {
        id: rotated.id,
        api_key: token.clone(),
        token,
        expires_at: expiry(exp),
    }))
}
