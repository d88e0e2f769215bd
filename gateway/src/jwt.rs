//! Agent identity: HS256 JWTs signed with `JWT_SECRET`.
//!
//! Claims follow MeshGuard's documented set (`sub`, `name`, `tier`, `tags`, `iat`, `exp`,
//! `iss: "meshguard"`), plus `ver`, the agent's token version: re-issuing a token bumps the
//! version stored with the agent, so every earlier token stops working at once. The token proves
//! identity only; tier and tags are read from the store on every request, so a PATCH or a revoke
//! takes effect immediately.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// Not before (unix seconds): the gateway never sets it, but a token that carries one is
    /// held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nbf: Option<u64>,
    pub(crate) iss: String,
    #[serde(default)]
    pub(crate) ver: i64,
}

pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: Duration,
    /// Tokens whose signature and claims already verified, by SHA-256 of the token: agents
    /// present the same token on every call, and checking an HS256 signature and parsing the
    /// claims was a tenth of a decision's CPU. Keyed by digest, not by the token, so a lookup
    /// never compares a presented token with a valid one byte by byte. Expiry is checked on
    /// every hit; revocation and re-issue are checked against the store by the caller anyway.
    verified: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

/// Verified tokens remembered at most; the cache starts over when it is full.
const VERIFIED_CAPACITY: usize = 16_384;

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
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            default_ttl,
            verified: Mutex::new(HashMap::new()),
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
            nbf: None,
            iss: "meshguard".to_owned(),
            ver: agent.token_version,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        (token, exp)
    }

    /// The claims of a token whose signature, issuer and expiry check out.
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Self::verify`], judging a remembered token's expiry at `now` (unix seconds).
    fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Claims>, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let hit = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        if let Some(claims) = hit {
            if claims
                .exp
                .is_some_and(|exp| exp.saturating_add(self.validation.leeway) < now)
            {
                return Err(TokenError::Invalid(
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature.into(),
                ));
            }
            if claims
                .nbf
                .is_some_and(|nbf| nbf > now.saturating_add(self.validation.leeway))
            {
                return Err(TokenError::Invalid(
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature.into(),
                ));
            }
            return Ok(claims);
        }
        let claims = Arc::new(
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims,
        );
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(digest, Arc::clone(&claims));
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(ttl: Option<u64>) -> AgentRecord {
        AgentRecord {
            id: "agent_test".into(),
            name: "test".into(),
            trust_tier: "verified".into(),
            tags: vec![],
            metadata: serde_json::Map::new(),
            capabilities: vec![],
            description: None,
            token_ttl: ttl,
            token_version: 3,
            revision: 1,
            created_at: String::new(),
            updated_at: String::new(),
            revoked_at: None,
        }
    }

    #[test]
    fn a_remembered_token_still_expires_and_an_altered_one_never_passes() {
        let keys = TokenKeys::new(
            "secret-for-unit-tests-0123456789",
            Duration::from_secs(3600),
        );
        let now = jsonwebtoken::get_current_timestamp();
        let (token, exp) = keys.issue(&agent(Some(60)), now);
        let first = keys.verify(&token).expect("fresh token");
        let again = keys.verify(&token).expect("same token again");
        assert_eq!((first.sub.as_str(), first.ver), ("agent_test", 3));
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second call is answered from the cache"
        );

        // Within the leeway it is still good; past it, refused although it was remembered.
        let exp = exp.expect("a 60 s ttl sets exp");
        assert!(keys.verify_at(&token, exp + 30).is_ok());
        assert!(keys.verify_at(&token, exp + 31).is_err());

        // A different signature never matches the remembered entry.
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert!(keys.verify(&forged).is_err());
        let other = TokenKeys::new("another-secret-0123456789abcdef", Duration::from_secs(3600));
        assert!(other.verify(&token).is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let keys = TokenKeys::new(
            "secret-for-unit-tests-0123456789",
            Duration::from_secs(3600),
        );
        let now = jsonwebtoken::get_current_timestamp();
        let claims = |nbf: u64| Claims {
            sub: "agent_test".into(),
            name: "test".into(),
            tier: "verified".into(),
            tags: vec![],
            iat: now,
            exp: Some(now + 3600),
            nbf: Some(nbf),
            iss: "meshguard".into(),
            ver: 3,
        };
        let sign = |c: &Claims| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), c, &keys.encoding).unwrap()
        };
        assert!(
            keys.verify(&sign(&claims(now + 600))).is_err(),
            "nbf in 10 minutes"
        );
        let ok = sign(&claims(now.saturating_sub(1)));
        assert!(keys.verify(&ok).is_ok());
        // Remembered, it is still held to its nbf when asked about an earlier time.
        assert!(keys.verify_at(&ok, now.saturating_sub(100)).is_err());
    }

    #[test]
    fn an_expired_token_is_refused_and_not_remembered() {
        let keys = TokenKeys::new(
            "secret-for-unit-tests-0123456789",
            Duration::from_secs(3600),
        );
        let long_ago = jsonwebtoken::get_current_timestamp() - 3600;
        let (token, _) = keys.issue(&agent(Some(60)), long_ago);
        assert!(keys.verify(&token).is_err());
        assert!(keys.verified.lock().unwrap().is_empty());
    }
}
