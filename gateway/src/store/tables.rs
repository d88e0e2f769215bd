//! The control plane's tables as both stores read and write them, one section per table: its
//! columns, the statements on it, and the mapping between its rows and the records.
//!
//! Statements are written once, in the SQL both databases read (see `dialect.rs` for the few
//! places they differ); each store runs them on its own connection and transaction. The
//! `CREATE TABLE`s are not here: they are the migrations each store shipped, which must stay as
//! they are. The column lists below are what those migrations left.

use super::dialect::{Cells, Param};
use super::{AgentRecord, StoreError, Write};

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
