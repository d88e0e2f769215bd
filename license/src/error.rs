//! One error type whose messages name the file or field at fault and what to do.

use std::path::PathBuf;

/// Why a license operation was refused. [`LicenseError::code`] is a stable machine-readable
/// name; the `Display` text is for people.
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{what} is not a valid {kind}: {detail}")]
    Format {
        what: String,
        kind: &'static str,
        detail: String,
    },
    #[error(
        "{what} is signed by vendor key {found}, not by the configured key {expected}; \
         check that the vendor public key is the one for this license"
    )]
    WrongKey {
        what: String,
        found: String,
        expected: String,
    },
    #[error(
        "{what}: the signature does not match the content (signed by key {key_id}); the file \
         was changed after signing: ask the vendor for a fresh copy"
    )]
    BadSignature { what: String, key_id: String },
    #[error(
        "license {id} sequence {offered} is older than the installed sequence {installed}: an \
         earlier license or renewal was replayed; install the latest renewal instead"
    )]
    Replayed {
        id: String,
        offered: u64,
        installed: u64,
    },
    #[error(
        "license {id} sequence {sequence} differs from the installed license with the same \
         sequence; a sequence number is never reused, so one of them was altered"
    )]
    SequenceReused { id: String, sequence: u64 },
    #[error("{0}")]
    Activation(String),
    #[error("license {id} is not valid before {not_before}; install it on or after that time")]
    NotYetValid { id: String, not_before: String },
    #[error(
        "license {id} expired on {expires} and its grace period ended on {grace_end}; ask the \
         vendor for a renewal"
    )]
    Expired {
        id: String,
        expires: String,
        grace_end: String,
    },
    #[error(
        "license {id} is for deployment mode {licensed}, but this installation runs as \
         {configured}; use the license issued for this deployment"
    )]
    WrongMode {
        id: String,
        licensed: String,
        configured: String,
    },
    #[error(
        "license {id} allows regions [{allowed}], not {configured}; use the license issued for \
         this region"
    )]
    WrongRegion {
        id: String,
        allowed: String,
        configured: String,
    },
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Age(String),
    #[error("{0}")]
    Invalid(String),
}

impl LicenseError {
    /// A stable name for the kind of failure (`bad_signature`, `replayed`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Format { .. } => "format",
            Self::WrongKey { .. } => "wrong_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::Replayed { .. } => "replayed",
            Self::SequenceReused { .. } => "sequence_reused",
            Self::Activation(_) => "activation",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::WrongMode { .. } => "wrong_mode",
            Self::WrongRegion { .. } => "wrong_region",
            Self::Key(_) => "key",
            Self::Age(_) => "age",
            Self::Invalid(_) => "invalid",
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            cause: source,
        }
    }
}
