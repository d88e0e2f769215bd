//! Agents: the identities that call the gateway's data plane.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An agent as the admin API returns it (`GET /admin/agents/:id`, list items, PATCH response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Gateway-assigned id, `agent_` followed by lowercase letters and digits.
    pub id: String,
    pub name: String,
    /// Echoed exactly as the client sent it (aliases included).
    pub trust_tier: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// `POST /admin/agents`. Unknown fields that other clients send are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAgent {
    pub name: String,
    /// Defaults to `verified`. `trust_tier` (snake case, as older docs send it) is accepted.
    #[serde(default, alias = "trust_tier", skip_serializing_if = "Option::is_none")]
    pub trust_tier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Token lifetime for this agent: seconds as a number, or a duration such as `"24h"` or
    /// `"30d"`; `0` means the token never expires. Defaults to the gateway's `JWT_EXPIRES_IN`.
    #[serde(default, alias = "token_ttl", skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<Value>,
}

/// `PATCH /admin/agents/:id` (and `PUT`, its alias): any subset of the fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAgent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, alias = "trust_tier", skip_serializing_if = "Option::is_none")]
    pub trust_tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The 201 answer to `POST /admin/agents`: the full agent plus its token, returned only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCreated {
    #[serde(flatten)]
    pub agent: Agent,
    /// HS256 JWT the agent presents as `Authorization: Bearer`.
    pub token: String,
    /// The same value as `token`, under the name Terraform uses.
    pub api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The answer to `POST /admin/agents/:id/token`. Earlier tokens of the agent stop working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenIssued {
    pub id: String,
    pub token: String,
    pub api_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}
