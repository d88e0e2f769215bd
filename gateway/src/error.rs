//! The gateway's error type: a status, a stable code and a message that says what to do.
//!
//! It never carries internals to the client: storage failures answer 500 with a generic message
//! and the cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshguard_api::{ErrorBody, ValidationIssue};

use crate::store::StoreError;

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// The store refused a write because the object changed since it was read; worth a retry.
    stale: bool,
}

/// The longest message an error answer carries: a message that quotes what the caller sent
/// (a header, a path) is cut, so an answer never echoes a 70 KB header back.
const MESSAGE_MAX: usize = 2048;

fn bounded(mut message: String) -> String {
    if message.len() > MESSAGE_MAX {
        let mut end = MESSAGE_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (cut)");
    }
    message
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.to_owned(),
                message: bounded(message.into()),
                field: None,
                line: None,
                errors: Vec::new(),
                outcome: None,
            },
            stale: false,
        }
    }

    pub(crate) fn message(&self) -> &str {
        &self.body.message
    }

    pub(crate) fn is_outcome_unknown(&self) -> bool {
        self.body.outcome.is_some()
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.stale
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A 400 naming the field at fault.
    pub(crate) fn field(field: &str, message: impl AsRef<str>) -> Self {
        let mut e = Self::bad_request(format!("{field}: {}", message.as_ref()));
        e.body.field = Some(field.to_owned());
        e
    }

    /// A 400 for an invalid policy document, listing every problem; the first one leads.
    pub(crate) fn invalid_policy(errors: Vec<ValidationIssue>) -> Self {
        let first = errors.first();
        let lead = first.map_or_else(String::new, |e| match e.line {
            Some(line) => format!("{} (line {line})", e.message),
            None => e.message.clone(),
        });
        let more = if errors.len() > 1 {
            format!(" and {} more problem(s)", errors.len() - 1)
        } else {
            String::new()
        };
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_policy",
            format!("invalid policy: {lead}{more}"),
        );
        e.body.field = first.map(|i| {
            format!("content.{}", i.path)
                .trim_end_matches('.')
                .to_owned()
        });
        e.body.line = first.and_then(|i| i.line);
        e.body.errors = errors;
        e
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} {id:?} not found"),
        )
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway could not complete the request; see the gateway log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Stale => {
                let mut e = Self::conflict(
                    "the object was changed by another request at the same time; read it again and retry",
                );
                e.stale = true;
                e
            }
            StoreError::Conflict(msg) => Self::conflict(msg),
            StoreError::Backend(cause) => Self::internal(cause),
            StoreError::AgentLimit(active) => Self::new(
                StatusCode::FORBIDDEN,
                "license_limit",
                format!(
                    "the license allows no more than the {active} active agents that exist; revoke an agent or install a license with a higher maxAgents"
                ),
            ),
            StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "the control-plane database is unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the control-plane database is unavailable, so the change was not made; retry once it is back (decisions go on meanwhile)",
                )
            }
            StoreError::OutcomeUnknown(cause) => {
                tracing::error!(%cause, "the database connection was lost while a change committed");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "outcome_unknown",
                    "the database connection was lost while the change committed, so it may or may not have been made; send a create again with the same Idempotency-Key to settle it, or read the object before changing it again",
                );
                e.body.outcome = Some("unknown".to_owned());
                e
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}
