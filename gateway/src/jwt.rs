//! Agent identity: HS256 JWTs signed with `JWT_SECRET`.
//!
//! Claims follow MeshGuard's documented set (`sub`, `name`, `tier`, `tags`, `iat`, `exp`,
//! `iss: "meshguard"`), plus `ver`, the agent's token version: re-issuing a token bumps the
//! version stored with the agent, so every earlier token stops working at once. The token proves
//! identity only; tier and tags are read from the store on every request, so a PATCH or a revoke
//! takes effect immediately.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::AgentRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default, alias = "trust")]
    pub(crate) tier: String,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    pub(crate) iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) exp: Option<u64>,
    pub(crate) iss: String,
    #[serde(default)]
    pub(crate) ver: i64,
}

pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

/// Why a presented token was refused. Shown to the caller only as "invalid or expired token".
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

impl TokenKeys {
    pub(crate) fn new(secret: &str, default_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims = HashSet::from(["sub".to_owned(), "iss".to_owned()]);
        validation.set_issuer(&["meshguard"]);
        validation.validate_exp = true;
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            default_ttl,
        }
    }

    /// Issues a token for `agent`; returns it with its expiry (unix seconds), if any.
    pub(crate) fn issue(&self, agent: &AgentRecord, now_unix: u64) -> (String, Option<u64>) {
        let ttl = agent
            .token_ttl
            .map_or(self.default_ttl, Duration::from_secs);
        let exp = (!ttl.is_zero()).then(|| now_unix + ttl.as_secs());
        let claims = Claims {
            sub: agent.id.clone(),
            name: agent.name.clone(),
            tier: agent.trust_tier.clone(),
            tags: agent.tags.clone(),
            iat: now_unix,
            exp,
            iss: "meshguard".to_owned(),
            ver: agent.token_version,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        (token, exp)
    }

    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims)
    }
}
