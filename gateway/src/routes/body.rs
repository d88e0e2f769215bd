//! Request bodies: JSON parsed with the failing field named, and the size limit as a clear 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Like `axum::Json`, but a bad body is a 400 naming the field (`tags[2]: invalid type: integer,
/// expected a string`), an empty body says so, and any `Content-Type` is accepted, as the
/// MeshGuard SDKs do not all send one.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

#[async_trait::async_trait]
impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = RawBody::from_request(req, state).await?.0;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body as bytes, with the size limit turned into a 413 that names the limit.
#[derive(Debug)]
pub(crate) struct RawBody(pub(crate) Bytes);

#[async_trait::async_trait]
impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than the gateway's limit of {limit} bytes (MAX_BODY_BYTES)"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("invalid JSON: {text}"))
        } else if path != "." {
            ApiError::field(&path, text)
        } else if let Some(missing) = text
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            ApiError::field(missing, "missing; this field is required")
        } else {
            ApiError::bad_request(text)
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    Ok(value)
}
