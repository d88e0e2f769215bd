//! File helpers: atomic writes, streaming hashes, sorted walks, free space.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::BundleError;

const BUF: usize = 1 << 20;

/// Write, fsync, rename, fsync the directory: a reader sees the old file or the new one
/// (`meshguard_common::fsx`, shared with the gateway and the licensing tools).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    meshguard_common::fsx::write_atomic(path, bytes, meshguard_common::fsx::Mode::Public)
        .map_err(|e| BundleError::io("write", path, e))
}

pub use meshguard_common::fsx::sync_dir;

/// Hex SHA-256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), BundleError> {
    let mut f = File::open(path).map_err(|e| BundleError::io("read", path, e))?;
    sha256_reader(&mut f).map_err(|e| BundleError::io("read", path, e))
}

pub fn sha256_reader(r: &mut impl Read) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let got = r.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Copies `from` to `to` (fsynced), returning the hex SHA-256 and size of what was copied.
pub fn copy_hashed(from: &Path, to: &Path) -> Result<(String, u64), BundleError> {
    let mut src = File::open(from).map_err(|e| BundleError::io("read", from, e))?;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| BundleError::io("create", dir, e))?;
    }
    let mut dst = File::create(to).map_err(|e| BundleError::io("write", to, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        let got = src
            .read(&mut buf)
            .map_err(|e| BundleError::io("read", from, e))?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        dst.write_all(&buf[..got])
            .map_err(|e| BundleError::io("write", to, e))?;
        n += got as u64;
    }
    dst.sync_all()
        .map_err(|e| BundleError::io("write", to, e))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Every regular file under `root`, as `/`-separated paths relative to it, sorted bytewise.
/// Symbolic links and special files are refused: media holds regular files only.
pub fn walk(root: &Path) -> Result<Vec<String>, BundleError> {
    let mut out = Vec::new();
    walk_into(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk_into(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BundleError> {
    let entries = fs::read_dir(dir).map_err(|e| BundleError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::io("list", dir, e))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| BundleError::io("inspect", &path, e))?;
        if ft.is_dir() {
            walk_into(root, &path, out)?;
        } else if ft.is_file() {
            out.push(rel(root, &path)?);
        } else {
            return Err(BundleError::Input(format!(
                "{} is a symbolic link or special file; media holds regular files only",
                path.display()
            )));
        }
    }
    Ok(())
}

pub fn rel(root: &Path, path: &Path) -> Result<String, BundleError> {
    let r = path.strip_prefix(root).map_err(|_| {
        BundleError::Input(format!("{} is outside {}", path.display(), root.display()))
    })?;
    let parts: Vec<String> = r
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(parts.join("/"))
}

/// A relative path that stays inside its root: no absolute path, no `..`, no empty name.
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\0') || path.contains('\\') {
        return None;
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Bytes free for an unprivileged writer on the filesystem holding `path` (or its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> Result<u64, BundleError> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            p = PathBuf::from(".");
            break;
        }
    }
    if p.as_os_str().is_empty() {
        p = PathBuf::from(".");
    }
    let st = rustix::fs::statvfs(&p)
        .map_err(|e| BundleError::io("inspect free space on", &p, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses to start writing `need` bytes under `path` when the disk cannot hold them.
pub fn ensure_space(path: &Path, need: u64, what: &str) -> Result<(), BundleError> {
    let free = free_bytes(path)?;
    // Leave 64 MiB for everything else on the machine.
    if free < need.saturating_add(64 << 20) {
        return Err(BundleError::Space(format!(
            "{what} needs about {} MiB under {} but only {} MiB are free; free some space or \
             choose another destination",
            need >> 20,
            path.display(),
            free >> 20
        )));
    }
    Ok(())
}

/// Holds an exclusive lock on `path` (created if missing) for as long as the file is open;
/// fails at once, naming the file, if another process holds it.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File, BundleError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| BundleError::io("open", path, e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        BundleError::Input(format!(
            "{} is locked by another process (an install or witness run in progress); wait for it to finish",
            path.display()
        ))
    })?;
    Ok(f)
}

/// Writes a new private file (mode 0600), refusing to replace one: for secret keys.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BundleError::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| BundleError::io("write", path, e))?;
    Ok(())
}
