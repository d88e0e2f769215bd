//! Atomic file writes: write a sibling, fsync it, rename over the target, fsync the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::LicenseError;

/// Replaces `path` with `bytes` so a reader sees the old file or the new one, never a mix.
/// `private` files are created mode 0600.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), LicenseError> {
    write_atomic_io(path, bytes, private).map_err(|source| LicenseError::io("write", path, source))
}

/// [`write_atomic`] with the plain I/O error, for the other crates of the workspace (the
/// gateway's sidecar cache).
pub fn write_atomic_io(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LicenseError> {
    fs::read(path).map_err(|e| LicenseError::io("read", path, e))
}
