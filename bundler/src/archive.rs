//! Safe tar extraction: only regular files and directories, each under the destination.
//!
//! Refused, naming the entry: absolute paths, `..`, symbolic and hard links (whether they
//! escape the root or not: media holds regular files only), device nodes, FIFOs, and archives
//! that expand past their size limit or decompression ratio (bombs). Extraction writes into a
//! staging directory that is renamed into place only when everything is in, so a refused
//! archive leaves nothing behind that looks complete.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{BundleError, fsx};

/// Limits against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of file content to write.
    pub max_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
    /// Most expansion over the compressed input (checked once past 16 MiB of output).
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 30,
            max_entries: 1_000_000,
            max_ratio: 200,
        }
    }
}

/// Counts the bytes read through it (the compressed side).
#[derive(Debug)]
pub struct Counting<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Extracts a tar stream into `dest` (which must not exist). `compressed` counts the bytes
/// of compressed input read so far, for the ratio check. Returns the files written.
pub fn extract(
    tar: impl Read,
    dest: &Path,
    limits: Limits,
    compressed: Option<Arc<AtomicU64>>,
    what: &str,
) -> Result<Vec<String>, BundleError> {
    if dest.exists() {
        return Err(BundleError::Input(format!(
            "{} exists; unpack into a new directory",
            dest.display()
        )));
    }
    let mut staging_name = dest.file_name().unwrap_or_default().to_owned();
    staging_name.push(format!(".partial-{}", std::process::id()));
    let staging = dest.with_file_name(staging_name);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| BundleError::io("create", &staging, e))?;
    let result = extract_into(tar, &staging, limits, compressed, what);
    match result {
        Ok(files) => {
            fs::rename(&staging, dest).map_err(|e| BundleError::io("rename into", dest, e))?;
            fsx::sync_dir(dest.parent().unwrap_or(Path::new(".")))
                .map_err(|e| BundleError::io("sync", dest, e))?;
            Ok(files)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn extract_into(
    tar: impl Read,
    root: &Path,
    limits: Limits,
    compressed: Option<Arc<AtomicU64>>,
    what: &str,
) -> Result<Vec<String>, BundleError> {
    let mut x = Extraction {
        root,
        limits,
        compressed,
        what,
        written: 0,
        count: 0,
        files: Vec::new(),
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| BundleError::Archive(format!("{what} is not a tar archive: {e}")))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| BundleError::Archive(format!("{what}: damaged tar entry: {e}")))?;
        x.entry(entry)?;
    }
    x.files.sort();
    Ok(x.files)
}

/// An extraction in progress: what it may write, and what it has.
struct Extraction<'a> {
    root: &'a Path,
    limits: Limits,
    /// The compressed bytes read so far, for the ratio check.
    compressed: Option<Arc<AtomicU64>>,
    /// The archive, as errors name it.
    what: &'a str,
    /// File content written, and entries seen.
    written: u64,
    count: u64,
    files: Vec<String>,
}

impl Extraction<'_> {
    fn bad(&self, entry: &str, why: &str) -> BundleError {
        BundleError::Archive(format!(
            "{}: entry {entry:?} refused: {why}; nothing was extracted",
            self.what
        ))
    }

    /// One entry: a directory or regular file under the root is written; any other kind, or a
    /// path that leaves the root, is refused.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), BundleError> {
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(BundleError::Archive(format!(
                "{} has more than {} entries (decompression bomb?); refused",
                self.what, self.limits.max_entries
            )));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if name.starts_with('/') {
            return Err(self.bad(&name, "absolute path"));
        }
        let Some(rel) = fsx::safe_relative(&name) else {
            return Err(self.bad(&name, "path leaves the destination (..)"));
        };
        let target = self.root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(|e| BundleError::io("create", &target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.regular_file(&mut entry, &name, &target)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(self.link_refused(&entry, kind, &name, &rel));
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.bad(&name, "device node"));
            }
            tar::EntryType::Fifo => return Err(self.bad(&name, "FIFO")),
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => return Err(self.bad(&name, &format!("unsupported entry type {other:?}"))),
        }
        Ok(())
    }

    /// A regular file, written (once: a name listed twice is refused) and synced, within the
    /// size and ratio limits.
    fn regular_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        target: &Path,
    ) -> Result<(), BundleError> {
        let what = self.what;
        let size = entry.header().size().unwrap_or(u64::MAX);
        if self.written.saturating_add(size) > self.limits.max_bytes {
            return Err(BundleError::Archive(format!(
                "{what} expands past {} bytes at {name:?} (decompression bomb?); refused",
                self.limits.max_bytes
            )));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| BundleError::io("create", parent, e))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => self.bad(name, "listed twice"),
                _ => BundleError::io("write", target, e),
            })?;
        let copied = copy_limited(entry, &mut out, size)
            .map_err(|e| BundleError::Archive(format!("{what}: cannot read {name:?}: {e}")))?;
        out.sync_all()
            .map_err(|e| BundleError::io("write", target, e))?;
        self.written += copied;
        if let Some(c) = &self.compressed {
            let input = c.load(Ordering::Relaxed).max(1);
            if self.written > 16 << 20 && self.written / input > self.limits.max_ratio {
                return Err(BundleError::Archive(format!(
                    "{what} expands more than {}:1 (decompression bomb?); refused",
                    self.limits.max_ratio
                )));
            }
        }
        self.files.push(fsx::rel(self.root, target)?);
        Ok(())
    }

    /// The refusal of a symbolic or hard link: media holds regular files only, and one that
    /// escapes the destination says so.
    fn link_refused<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        kind: tar::EntryType,
        name: &str,
        rel: &Path,
    ) -> BundleError {
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let escapes = link.starts_with('/')
            || fsx::safe_relative(&format!(
                "{}/{link}",
                rel.parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
            .is_none();
        let kind = if kind == tar::EntryType::Symlink {
            "symbolic link"
        } else {
            "hard link"
        };
        self.bad(
            name,
            &if escapes {
                format!("{kind} to {link:?} escapes the destination")
            } else {
                format!("{kind} to {link:?}; media holds regular files only")
            },
        )
    }
}

/// Copies exactly what the header promised, and no more.
fn copy_limited(r: &mut impl Read, w: &mut impl io::Write, size: u64) -> io::Result<u64> {
    let n = io::copy(&mut r.take(size), w)?;
    if n != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "entry is truncated",
        ));
    }
    Ok(n)
}
