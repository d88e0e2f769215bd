//! File helpers with the crate's errors.

use std::fs;
use std::path::Path;

use meshguard_common::fsx::{self, Mode};

use crate::LicenseError;

/// Replaces `path` with `bytes` so a reader sees the old file or the new one, never a mix
/// (`meshguard_common::fsx`). `private` files are created mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), LicenseError> {
    let mode = if private { Mode::Private } else { Mode::Public };
    fsx::write_atomic(path, bytes, mode).map_err(|source| LicenseError::io("write", path, source))
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LicenseError> {
    fs::read(path).map_err(|e| LicenseError::io("read", path, e))
}
