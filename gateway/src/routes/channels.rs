//! `/admin/alert-channels`: where alerts go. Secrets are write-only: reads say only whether one
//! is set, and change records name a rotated secret without showing it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use meshguard_api::{AlertChannel, AlertChannelInput, AlertChannelList, ChannelType};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::changes::{Draft, digest_json};
use crate::auth::{Admin, ChangeMeta};
use crate::config::Config;
use crate::error::ApiError;
use crate::state::Db;
use crate::store::{ChannelRecord, Write};

/// `scheme://host/…`: where a secret URL goes, without the part that is the secret.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    format!("{scheme}://{host}/\u{2026}")
}

fn view(c: &ChannelRecord) -> AlertChannel {
    let slack = c.kind == ChannelType::Slack;
    AlertChannel {
        id: c.id.clone(),
        kind: c.kind,
        endpoint: if slack {
            redact_url(&c.endpoint)
        } else {
            c.endpoint.clone()
        },
        endpoint_digest: slack.then(|| crate::routes::digest(c.endpoint.as_bytes())),
        name: c.name.clone(),
        severity: c.severity,
        triggers: c.triggers.clone(),
        slack_channel: c.slack_channel.clone(),
        webhook_secret_set: c.webhook_secret.is_some(),
        pagerduty_routing_key_set: c.pagerduty_routing_key.is_some(),
        enabled: c.enabled,
        created_at: c.created_at.clone(),
        updated_at: c.updated_at.clone(),
    }
}

/// The channel as its change records keep it: as reads show it, so a Slack webhook URL is only
/// its host and digest (a change still shows) and never the URL.
fn view_json(c: &ChannelRecord) -> Value {
    serde_json::to_value(view(c)).expect("channels serialize")
}

fn secret_fields(before: &ChannelRecord, after: &ChannelRecord) -> Vec<&'static str> {
    let mut out = Vec::new();
    if before.webhook_secret != after.webhook_secret {
        out.push("webhookSecret");
    }
    if before.pagerduty_routing_key != after.pagerduty_routing_key {
        out.push("pagerdutyRoutingKey");
    }
    out
}

/// `http://` or `https://` followed by a host.
fn check_endpoint(url: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ApiError::field("endpoint", "expected an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(ApiError::field(
            "endpoint",
            "expected a URL with a host, such as https://hooks.example.com/alerts",
        ));
    }
    Ok(())
}

/// The rules every stored channel obeys, checked on the merged result of create and update.
fn check(config: &Config, c: &ChannelRecord) -> Result<(), ApiError> {
    check_endpoint(&c.endpoint)?;
    config
        .alerts
        .destinations
        .check_url(&c.endpoint)
        .map_err(|why| ApiError::field("endpoint", why))?;
    if c.endpoint.contains('@')
        && reqwest::Url::parse(&c.endpoint)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
    {
        return Err(ApiError::field(
            "endpoint",
            "carries credentials in the URL, which would be stored and shown in clear; give a webhookSecret instead",
        ));
    }
    match c.kind {
        ChannelType::Slack
            if c.slack_channel
                .as_deref()
                .is_none_or(|s| s.trim().is_empty()) =>
        {
            Err(ApiError::field(
                "slackChannel",
                "required when type is slack, e.g. #meshguard-alerts",
            ))
        }
        ChannelType::Pagerduty
            if c.pagerduty_routing_key
                .as_deref()
                .is_none_or(|s| s.trim().is_empty()) =>
        {
            Err(ApiError::field(
                "pagerdutyRoutingKey",
                "required when type is pagerduty (the Events API v2 integration key)",
            ))
        }
        ChannelType::Email => Err(ApiError::field(
            "type",
            "email channels need SMTP settings, which this gateway does not support yet; use webhook, slack or pagerduty",
        )),
        _ => Ok(()),
    }
}

fn apply(c: &mut ChannelRecord, input: AlertChannelInput) {
    if let Some(v) = input.kind {
        c.kind = v;
    }
    if let Some(v) = input.endpoint {
        c.endpoint = v;
    }
    if let Some(v) = input.name {
        c.name = Some(v);
    }
    if let Some(v) = input.severity {
        c.severity = Some(v);
    }
    if let Some(v) = input.triggers {
        c.triggers = v;
    }
    if let Some(v) = input.slack_channel {
        c.slack_channel = Some(v);
    }
    if let Some(v) = input.pagerduty_routing_key {
        c.pagerduty_routing_key = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = input.webhook_secret {
        c.webhook_secret = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = input.enabled {
        c.enabled = v;
    }
}

pub(super) async fn list(
    _: Admin,
    State(db): State<Db>,
) -> Result<Json<AlertChannelList>, ApiError> {
    let channels = db.run(|s| s.list_channels()).await?;
    Ok(Json(AlertChannelList {
        channels: channels.iter().map(view).collect(),
    }))
}

pub(super) async fn create(
    _: Admin,
    State(db): State<Db>,
    State(config): State<std::sync::Arc<Config>>,
    meta: ChangeMeta,
    JsonBody(input): JsonBody<AlertChannelInput>,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(id) = super::changes::replayed(&db, &meta, "alert_channel").await? {
        return Ok((StatusCode::CREATED, Json(view(&existing(&db, &id).await?))));
    }
    let kind = input
        .kind
        .ok_or_else(|| ApiError::field("type", "missing; expected webhook, slack or pagerduty"))?;
    if input.endpoint.is_none() {
        return Err(ApiError::field(
            "endpoint",
            "missing; expected the URL alerts are sent to",
        ));
    }
    let now = crate::clock::now_rfc3339();
    let mut rec = ChannelRecord {
        id: crate::ids::new_id("channel"),
        kind,
        endpoint: String::new(),
        name: None,
        severity: None,
        triggers: Vec::new(),
        slack_channel: None,
        webhook_secret: None,
        pagerduty_routing_key: None,
        enabled: true,
        revision: 1,
        created_at: now.clone(),
        updated_at: now,
    };
    apply(&mut rec, input);
    check(&config, &rec)?;
    let after = view_json(&rec);
    let change = Draft {
        kind: "alert_channel",
        operation: "create",
        object_id: &rec.id,
        object_name: rec.name.as_deref(),
        before: None,
        new_digest: Some(digest_json(&after)),
        after: Some(after),
        old_digest: None,
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let saved = rec.clone();
    let saved = db
        .run(move |s| s.save_channel(&saved, Write::Insert, &change))
        .await;
    if let Some(id) = super::changes::or_replayed(&db, &meta, "alert_channel", saved).await? {
        return Ok((StatusCode::CREATED, Json(view(&existing(&db, &id).await?))));
    }
    tracing::info!(channel = %rec.id, kind = ?rec.kind, "alert channel created");
    Ok((StatusCode::CREATED, Json(view(&rec))))
}

async fn existing(db: &Db, id: &str) -> Result<ChannelRecord, ApiError> {
    let key = id.to_owned();
    db.run(move |s| s.get_channel(&key))
        .await?
        .ok_or_else(|| ApiError::not_found("alert channel", id))
}

pub(super) async fn get(
    _: Admin,
    State(db): State<Db>,
    Path(id): Path<String>,
) -> Result<Json<AlertChannel>, ApiError> {
    Ok(Json(view(&existing(&db, &id).await?)))
}

pub(super) async fn update(
    _: Admin,
    State(db): State<Db>,
    State(config): State<std::sync::Arc<Config>>,
    Path(id): Path<String>,
    meta: ChangeMeta,
    JsonBody(input): JsonBody<AlertChannelInput>,
) -> Result<Json<AlertChannel>, ApiError> {
    let current = existing(&db, &id).await?;
    let mut next = current.clone();
    apply(&mut next, input);
    check(&config, &next)?;
    next.revision = current.revision + 1;
    next.updated_at = crate::clock::now_rfc3339();
    let before = view_json(&current);
    let after = view_json(&next);
    let change = Draft {
        kind: "alert_channel",
        operation: "update",
        object_id: &next.id,
        object_name: next.name.as_deref(),
        old_digest: Some(digest_json(&before)),
        new_digest: Some(digest_json(&after)),
        before: Some(before),
        after: Some(after),
        hidden_fields: secret_fields(&current, &next),
    }
    .build(&meta);
    let saved = next.clone();
    let expected = current.revision;
    db.run(move |s| s.save_channel(&saved, Write::Update { expected }, &change))
        .await?;
    tracing::info!(channel = %next.id, "alert channel updated");
    Ok(Json(view(&next)))
}

pub(super) async fn delete(
    _: Admin,
    State(db): State<Db>,
    Path(id): Path<String>,
    meta: ChangeMeta,
) -> Result<Json<Value>, ApiError> {
    let current = existing(&db, &id).await?;
    let before = view_json(&current);
    let change = Draft {
        kind: "alert_channel",
        operation: "delete",
        object_id: &current.id,
        object_name: current.name.as_deref(),
        old_digest: Some(digest_json(&before)),
        before: Some(before),
        after: None,
        new_digest: None,
        hidden_fields: Vec::new(),
    }
    .build(&meta);
    let saved = current.clone();
    let expected = current.revision;
    db.run(move |s| s.save_channel(&saved, Write::Delete { expected }, &change))
        .await?;
    tracing::info!(channel = %current.id, "alert channel deleted");
    Ok(Json(json!({"status": "deleted", "id": current.id})))
}
