//! One error type; every message names the file and the check, and says what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Manifest {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Key(String),
    /// A signature is missing, by another key, or does not verify.
    #[error("{0}")]
    Signature(String),
    /// A file's content does not match what the signed record says.
    #[error("{0}")]
    Integrity(String),
    /// Files on the media that no signed record lists.
    #[error("{0}")]
    Unlisted(String),
    #[error("{0}")]
    Layout(String),
    #[error("{0}")]
    Archive(String),
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Space(String),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    License(#[from] meshguard_license::LicenseError),
}

impl BundleError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            cause: source,
        }
    }

    /// A stable name for the check that failed.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Manifest { .. } => "manifest",
            Self::Key(_) => "key",
            Self::Signature(_) => "signature",
            Self::Integrity(_) => "integrity",
            Self::Unlisted(_) => "unlisted",
            Self::Layout(_) => "oci_layout",
            Self::Archive(_) => "archive",
            Self::Registry(_) => "registry",
            Self::Space(_) => "disk_space",
            Self::Input(_) => "input",
            Self::License(_) => "license",
        }
    }
}

/// A note, key, checkpoint or cosignature that does not hold is an integrity failure of what
/// carried it.
impl From<meshguard_tlog::note::NoteError> for BundleError {
    fn from(e: meshguard_tlog::note::NoteError) -> Self {
        Self::Integrity(e.0)
    }
}
