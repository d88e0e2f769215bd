//! Admin authentication and the request metadata every admin write records.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;

/// Proof that the request carried the admin token, in `X-Admin-Token` or as
/// `Authorization: Bearer`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin;

#[async_trait::async_trait]
impl<S> FromRequestParts<S> for Admin
where
    Arc<Config>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let config = Arc::<Config>::from_ref(state);
        let presented = parts
            .headers
            .get("x-admin-token")
            .and_then(|v| v.to_str().ok())
            .or_else(|| bearer(&parts.headers));
        let Some(presented) = presented else {
            return Err(ApiError::unauthorized(
                "Missing X-Admin-Token or Authorization header",
            ));
        };
        if !tokens_equal(presented, &config.admin_token) {
            return Err(ApiError::unauthorized("Invalid admin token"));
        }
        client_cert_ok(parts, &config)?;
        Ok(Admin)
    }
}

/// With `ADMIN_CLIENT_CA_FILE` set, an admin request must also come over a connection that
/// presented a client certificate from one of its CAs (the listener verified the chain).
pub(crate) fn client_cert_ok(parts: &Parts, config: &Config) -> Result<(), ApiError> {
    if config.admin_client_ca.is_none() {
        return Ok(());
    }
    if let Some(c) = parts.extensions.get::<crate::tls::ClientCert>() {
        tracing::debug!(client_cert_sha256 = %c.sha256, "admin request over mutual TLS");
        return Ok(());
    }
    Err(ApiError::unauthorized(
        "the admin API requires a client certificate issued by the site's admin CA \
         (ADMIN_CLIENT_CA_FILE) besides the admin token; present one (the Terraform provider's \
         client_cert_file and client_key_file, curl's --cert and --key)",
    ))
}

/// The token after `Bearer `, if the header has that form.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares two tokens in time independent of where they differ and of their lengths: both are
/// hashed first, and the fixed-size digests are compared with `subtle`.
pub(crate) fn tokens_equal(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// `X-MeshGuard-Approver`, `X-MeshGuard-Change-Ticket` and the trace id, recorded with each
/// admin write.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangeMeta {
    pub(crate) approver: Option<String>,
    pub(crate) change_ticket: Option<String>,
    pub(crate) trace_id: String,
    /// `Idempotency-Key`: a create sent again with the same key answers the object the first
    /// one made instead of making a second (the provider sends one per planned resource).
    pub(crate) idempotency_key: Option<String>,
}

#[async_trait::async_trait]
impl<S: Send + Sync> FromRequestParts<S> for ChangeMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = |name: &str| -> Result<Option<String>, ApiError> {
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => {
                    let text = v
                        .to_str()
                        .map_err(|_| ApiError::field(name, "must be printable ASCII"))?;
                    let text = text.trim();
                    if text.len() > 256 {
                        return Err(ApiError::field(name, "must be at most 256 characters"));
                    }
                    Ok((!text.is_empty()).then(|| text.to_owned()))
                }
            }
        };
        Ok(Self {
            approver: header("x-meshguard-approver")?,
            change_ticket: header("x-meshguard-change-ticket")?,
            trace_id: trace_id(&parts.headers),
            idempotency_key: header("idempotency-key")?,
        })
    }
}

/// `X-MeshGuard-Trace-ID`, else `X-Trace-ID`, else a new id.
pub(crate) fn trace_id(headers: &HeaderMap) -> String {
    ["x-meshguard-trace-id", "x-trace-id"]
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .map_or_else(|| crate::ids::new_id("trace"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::tokens_equal;

    #[test]
    fn token_comparison_is_exact() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
        assert!(!tokens_equal("", "abc"));
    }
}
