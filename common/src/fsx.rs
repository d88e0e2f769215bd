//! Durable writes: a reader sees the old file or the new one, never a mix, and what was
//! written survives a power cut once the call returns.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The process's umask decides (0644 usually).
    Public,
    /// 0600: keys, secrets.
    Private,
}

/// Writes `bytes` to a sibling, fsyncs it, renames it over `path` and fsyncs the directory.
/// Missing parent directories are created. On failure the sibling is removed and `path` is
/// untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> std::io::Result<()> {
    if let Some(dir) = parent(path) {
        fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if mode == Mode::Private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        rename_durably(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames `from` over `to` and fsyncs the directory, so the rename survives a power cut.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent(to).unwrap_or(Path::new(".")))
}

/// fsyncs a directory (its entries: a file created or renamed in it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|d| !d.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn replaces_whole_creates_parents_and_keeps_private_files_private() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/key");
        write_atomic(&p, b"one", Mode::Private).unwrap();
        write_atomic(&p, b"two", Mode::Private).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "no partial file is left beside it");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        write_atomic(&p, b"old", Mode::Public).unwrap();
        // A directory where the sibling would go makes the write fail.
        fs::create_dir(t.path().join(format!("f.partial-{}", std::process::id()))).unwrap();
        assert!(write_atomic(&p, b"new", Mode::Public).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }
}
