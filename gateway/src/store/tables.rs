//! The control plane's tables as both stores read and write them, one section per table: its
//! columns, the statements on it, and the mapping between its rows and the records.
//!
//! Statements are written once, in the SQL both databases read (see `dialect.rs` for the few
//! places they differ); each store runs them on its own connection and transaction. The
//! `CREATE TABLE`s are not here: they are the migrations each store shipped, which must stay as
//! they are. The column lists below are what those migrations left.

use meshguard_api::ChangeRecord;
use serde_json::Value;

use super::dialect::{Cells, Param};
use super::{
    AgentRecord, ChangeDraft, ChangeFilter, ChannelRecord, PolicyRecord, StoreError, Write,
};

/// A statement with its parameters, in the shared spelling (`?N`).
#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) sql: String,
    pub(super) params: Vec<Param>,
}

impl Statement {
    fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, column: usize) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Backend(format!(
            "the JSON in column {column} of a stored row does not parse: {e}"
        ))
    })
}

// Agents.

const AGENT_COLUMNS: &str = "id, name, trust_tier, tags, metadata, capabilities, description, token_ttl, token_version, revision, created_at, updated_at, revoked_at";

pub(super) fn get_agent(id: &str) -> Statement {
    Statement::new(
        format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"),
        vec![id.into()],
    )
}

pub(super) fn list_agents() -> Statement {
    Statement::new(
        format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY created_at, id"),
        vec![],
    )
}

/// Agents that are not revoked, for `Write::InsertCapped` (counted in the write's transaction).
pub(super) fn count_active_agents() -> Statement {
    Statement::new(
        "SELECT COUNT(*) FROM agents WHERE revoked_at IS NULL",
        vec![],
    )
}

/// The statement that makes `write` of `a`. Agents are never deleted: revocation is an update.
pub(super) fn save_agent(a: &AgentRecord, write: Write) -> Result<Statement, StoreError> {
    let mut params: Vec<Param> = vec![
        (&a.id).into(),
        (&a.name).into(),
        (&a.trust_tier).into(),
        json(&a.tags).into(),
        json(&a.metadata).into(),
        json(&a.capabilities).into(),
        (&a.description).into(),
        a.token_ttl.map(|v| v as i64).into(),
        a.token_version.into(),
        a.revision.into(),
        (&a.created_at).into(),
        (&a.updated_at).into(),
        (&a.revoked_at).into(),
    ];
    match write {
        Write::Insert | Write::InsertCapped(_) => Ok(Statement::new(
            format!(
                "INSERT INTO agents ({AGENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params,
        )),
        Write::Update { expected } => {
            params.push(expected.into());
            Ok(Statement::new(
                "UPDATE agents SET name = ?2, trust_tier = ?3, tags = ?4, metadata = ?5, capabilities = ?6, description = ?7, token_ttl = ?8, token_version = ?9, revision = ?10, created_at = ?11, updated_at = ?12, revoked_at = ?13 WHERE id = ?1 AND revision = ?14",
                params,
            ))
        }
        Write::Delete { .. } => Err(StoreError::Backend(
            "agents are revoked, never deleted".into(),
        )),
    }
}

pub(super) fn agent_from_row(r: &dyn Cells) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        trust_tier: r.text(2)?,
        tags: from_json(&r.text(3)?, 3)?,
        metadata: from_json(&r.text(4)?, 4)?,
        capabilities: from_json(&r.text(5)?, 5)?,
        description: r.opt_text(6)?,
        token_ttl: r.opt_int(7)?.map(|v| v as u64),
        token_version: r.int(8)?,
        revision: r.int(9)?,
        created_at: r.text(10)?,
        updated_at: r.text(11)?,
        revoked_at: r.opt_text(12)?,
    })
}

// Policies.

const POLICY_COLUMNS: &str = "id, name, content, revision, created_at, updated_at";

pub(super) fn get_policy(id: &str) -> Statement {
    Statement::new(
        format!("SELECT {POLICY_COLUMNS} FROM policies WHERE id = ?1"),
        vec![id.into()],
    )
}

pub(super) fn get_policy_by_name(name: &str) -> Statement {
    Statement::new(
        format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = ?1"),
        vec![name.into()],
    )
}

pub(super) fn list_policies() -> Statement {
    Statement::new(
        format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"),
        vec![],
    )
}

pub(super) fn save_policy(p: &PolicyRecord, write: Write) -> Result<Statement, StoreError> {
    Ok(match write {
        Write::InsertCapped(_) => return Err(StoreError::Backend("only agents are capped".into())),
        Write::Insert => Statement::new(
            format!("INSERT INTO policies ({POLICY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            vec![
                (&p.id).into(),
                (&p.name).into(),
                (&p.content).into(),
                p.revision.into(),
                (&p.created_at).into(),
                (&p.updated_at).into(),
            ],
        ),
        Write::Update { expected } => Statement::new(
            "UPDATE policies SET name = ?2, content = ?3, revision = ?4, updated_at = ?5 WHERE id = ?1 AND revision = ?6",
            vec![
                (&p.id).into(),
                (&p.name).into(),
                (&p.content).into(),
                p.revision.into(),
                (&p.updated_at).into(),
                expected.into(),
            ],
        ),
        Write::Delete { expected } => Statement::new(
            "DELETE FROM policies WHERE id = ?1 AND revision = ?2",
            vec![(&p.id).into(), expected.into()],
        ),
    })
}

/// What a write of `p` that broke the uniqueness of policy names answers.
pub(super) fn policy_name_taken(p: &PolicyRecord) -> StoreError {
    StoreError::Conflict(format!("a policy named {:?} already exists", p.name))
}

pub(super) fn policy_from_row(r: &dyn Cells) -> Result<PolicyRecord, StoreError> {
    Ok(PolicyRecord {
        id: r.text(0)?,
        name: r.text(1)?,
        content: r.text(2)?,
        revision: r.int(3)?,
        created_at: r.text(4)?,
        updated_at: r.text(5)?,
    })
}

// Alert channels: everything but the bookkeeping is one JSON `body` (`channel_body.rs`), whose
// secrets are sealed when the store has a key.

const CHANNEL_COLUMNS: &str = "id, body, revision, created_at, updated_at";

pub(super) fn get_channel(id: &str) -> Statement {
    Statement::new(
        format!("SELECT {CHANNEL_COLUMNS} FROM alert_channels WHERE id = ?1"),
        vec![id.into()],
    )
}

pub(super) fn list_channels() -> Statement {
    Statement::new(
        format!("SELECT {CHANNEL_COLUMNS} FROM alert_channels ORDER BY created_at, id"),
        vec![],
    )
}

/// The statement that makes `write` of `ch`, whose body is `body` (`channel_body::encode`).
pub(super) fn save_channel(
    ch: &ChannelRecord,
    body: String,
    write: Write,
) -> Result<Statement, StoreError> {
    Ok(match write {
        Write::InsertCapped(_) => return Err(StoreError::Backend("only agents are capped".into())),
        Write::Insert => Statement::new(
            format!("INSERT INTO alert_channels ({CHANNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
            vec![
                (&ch.id).into(),
                body.into(),
                ch.revision.into(),
                (&ch.created_at).into(),
                (&ch.updated_at).into(),
            ],
        ),
        Write::Update { expected } => Statement::new(
            "UPDATE alert_channels SET body = ?2, revision = ?3, updated_at = ?4 WHERE id = ?1 AND revision = ?5",
            vec![
                (&ch.id).into(),
                body.into(),
                ch.revision.into(),
                (&ch.updated_at).into(),
                expected.into(),
            ],
        ),
        Write::Delete { expected } => Statement::new(
            "DELETE FROM alert_channels WHERE id = ?1 AND revision = ?2",
            vec![(&ch.id).into(), expected.into()],
        ),
    })
}

pub(super) fn channel_from_row(
    r: &dyn Cells,
    secrets: Option<&super::secrets::SecretBox>,
) -> Result<ChannelRecord, StoreError> {
    let mut body: super::channel_body::ChannelBody = from_json(&r.text(1)?, 1)?;
    if let Some(sb) = secrets {
        super::channel_body::open_body(&mut body, sb).map_err(StoreError::Backend)?;
    }
    Ok(ChannelRecord {
        id: r.text(0)?,
        kind: body.kind,
        endpoint: body.endpoint,
        name: body.name,
        severity: body.severity,
        triggers: body.triggers,
        slack_channel: body.slack_channel,
        webhook_secret: body.webhook_secret,
        pagerduty_routing_key: body.pagerduty_routing_key,
        enabled: body.enabled,
        revision: r.int(2)?,
        created_at: r.text(3)?,
        updated_at: r.text(4)?,
    })
}

// Change records.

const CHANGE_COLUMNS: &str = "seq, id, timestamp, kind, object_id, object_name, operation, fields, before, after, old_digest, new_digest, approver, change_ticket, trace_id, deployed_at, rollback_ref";

pub(super) fn list_changes(f: &ChangeFilter) -> Statement {
    Statement::new(
        format!(
            "SELECT {CHANGE_COLUMNS}
             FROM changes
             WHERE (CAST(?1 AS TEXT) IS NULL OR kind = ?1) AND (CAST(?2 AS TEXT) IS NULL OR object_id = ?2) AND seq > ?3
             ORDER BY seq LIMIT ?4"
        ),
        vec![
            (&f.kind).into(),
            (&f.object_id).into(),
            f.after_seq.unwrap_or(0).into(),
            (f.limit as i64).into(),
        ],
    )
}

/// The id of the change `c` replaces on the same object (its `rollback_ref`), read in the
/// write's own transaction.
pub(super) fn previous_change(c: &ChangeDraft) -> Statement {
    Statement::new(
        "SELECT id FROM changes WHERE kind = ?1 AND object_id = ?2 ORDER BY seq DESC LIMIT 1",
        vec![c.kind.into(), (&c.object_id).into()],
    )
}

pub(super) fn insert_change(c: &ChangeDraft, rollback_ref: Option<String>) -> Statement {
    // Agents and alert channels take effect with the commit; a policy once the engine's
    // snapshot holds it (`mark_deployed`).
    let deployed_at = (c.kind != "policy").then(|| c.timestamp.clone());
    Statement::new(
        "INSERT INTO changes (id, timestamp, kind, object_id, object_name, operation, fields, before, after, old_digest, new_digest, approver, change_ticket, trace_id, deployed_at, rollback_ref, idempotency_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        vec![
            (&c.id).into(),
            (&c.timestamp).into(),
            c.kind.into(),
            (&c.object_id).into(),
            (&c.object_name).into(),
            c.operation.into(),
            json(&c.fields).into(),
            c.before.as_ref().map(json).into(),
            c.after.as_ref().map(json).into(),
            (&c.old_digest).into(),
            (&c.new_digest).into(),
            (&c.approver).into(),
            (&c.change_ticket).into(),
            (&c.trace_id).into(),
            deployed_at.into(),
            rollback_ref.into(),
            (&c.idempotency_key).into(),
        ],
    )
}

pub(super) fn change_from_row(r: &dyn Cells) -> Result<ChangeRecord, StoreError> {
    let opt_json = |i: usize| -> Result<Option<Value>, StoreError> {
        r.opt_text(i)?.map(|t| from_json(&t, i)).transpose()
    };
    Ok(ChangeRecord {
        seq: r.int(0)?,
        id: r.text(1)?,
        timestamp: r.text(2)?,
        kind: r.text(3)?,
        object_id: r.text(4)?,
        object_name: r.opt_text(5)?,
        operation: r.text(6)?,
        fields: from_json(&r.text(7)?, 7)?,
        before: opt_json(8)?,
        after: opt_json(9)?,
        old_digest: r.opt_text(10)?,
        new_digest: r.opt_text(11)?,
        approver: r.opt_text(12)?,
        change_ticket: r.opt_text(13)?,
        trace_id: r.opt_text(14)?,
        deployed_at: r.opt_text(15)?,
        rollback_ref: r.opt_text(16)?,
    })
}

/// The object a create with this `Idempotency-Key` made: read with [`kind_and_object`].
pub(super) fn created_with_key(key: &str) -> Statement {
    Statement::new(
        "SELECT kind, object_id FROM changes WHERE idempotency_key = ?1",
        vec![key.into()],
    )
}

pub(super) fn kind_and_object(r: &dyn Cells) -> Result<(String, String), StoreError> {
    Ok((r.text(0)?, r.text(1)?))
}

pub(super) fn mark_deployed(change_id: &str, at: &str) -> Statement {
    Statement::new(
        "UPDATE changes SET deployed_at = ?2 WHERE id = ?1 AND deployed_at IS NULL",
        vec![change_id.into(), at.into()],
    )
}

pub(super) fn last_change_seq() -> Statement {
    Statement::new(
        "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM changes",
        vec![],
    )
}

pub(super) fn first_int(r: &dyn Cells) -> Result<i64, StoreError> {
    r.int(0)
}

// Alerts not delivered, and every delivery's outcome: JSON bodies keyed by alert and channel.

/// A string field of an alert or delivery, empty when missing.
fn field<'a>(alert: &'a Value, key: &str) -> &'a str {
    alert.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The row's key: one row per alert and channel.
fn alert_key(alert: &Value) -> String {
    format!("{}/{}", field(alert, "id"), field(alert, "channelId"))
}

pub(super) fn save_undelivered(alert: &Value) -> Statement {
    Statement::new(
        "INSERT INTO alert_failures (id, body, failed_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, failed_at = excluded.failed_at",
        vec![
            alert_key(alert).into(),
            json(alert).into(),
            field(alert, "failedAt").into(),
        ],
    )
}

pub(super) fn list_undelivered(limit: usize) -> Statement {
    Statement::new(
        "SELECT body FROM alert_failures ORDER BY failed_at DESC LIMIT ?1",
        vec![(limit as i64).into()],
    )
}

pub(super) fn record_delivery(delivery: &Value) -> Statement {
    Statement::new(
        "INSERT INTO alert_deliveries (id, at, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET at = excluded.at, body = excluded.body",
        vec![
            alert_key(delivery).into(),
            field(delivery, "at").into(),
            json(delivery).into(),
        ],
    )
}

pub(super) fn list_deliveries(from: Option<&str>, to: Option<&str>, limit: usize) -> Statement {
    Statement::new(
        "SELECT body FROM alert_deliveries
         WHERE (CAST(?1 AS TEXT) IS NULL OR at >= ?1) AND (CAST(?2 AS TEXT) IS NULL OR at < ?2)
         ORDER BY at LIMIT ?3",
        vec![from.into(), to.into(), (limit as i64).into()],
    )
}

/// A row whose only column is a JSON body.
pub(super) fn body_from_row(r: &dyn Cells) -> Result<Value, StoreError> {
    from_json(&r.text(0)?, 0)
}
