//! `SHA256SUMS` in the coreutils format, and hashing many files on every core.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{BundleError, fsx};

/// path → (hex sha256, size)
pub type Hashes = BTreeMap<String, (String, u64)>;

/// `<hex>  <path>\n` per file, sorted by path: `sha256sum -c` reads it.
pub fn format(hashes: &Hashes) -> String {
    let mut out = String::with_capacity(hashes.len() * 100);
    for (path, (hex, _)) in hashes {
        out.push_str(hex);
        out.push_str("  ");
        out.push_str(path);
        out.push('\n');
    }
    out
}

/// Parses `SHA256SUMS`; refuses anything `sha256sum -c` would not read the same way, and paths
/// that could leave the media directory.
pub fn parse(text: &str, what: &str) -> Result<BTreeMap<String, String>, BundleError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| BundleError::Integrity(format!("{what} line {}: {why}", i + 1));
        let (hex, rest) = line.split_at_checked(64).ok_or_else(|| bad("too short"))?;
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("not a lower-case SHA-256"));
        }
        let path = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| bad("expected two spaces after the hash"))?;
        if fsx::safe_relative(path).is_none_or(|p| p.to_string_lossy() != path) {
            return Err(bad(&format!("{path:?} is not a plain relative path")));
        }
        if out.insert(path.to_owned(), hex.to_owned()).is_some() {
            return Err(bad(&format!("{path} is listed twice")));
        }
    }
    Ok(out)
}

/// Hashes `paths` (relative to `root`) on every available core.
pub fn hash_all(root: &Path, paths: &[String]) -> Result<Hashes, BundleError> {
    hash_all_with(root, paths, None)
}

/// [`hash_all`], advancing `progress` by each file's size as it is done.
pub fn hash_all_with(
    root: &Path,
    paths: &[String],
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Hashes, BundleError> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Hashes::new());
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rel) = paths.get(i) else { break };
                    match fsx::sha256_file(&root.join(rel)) {
                        Ok(h) => {
                            if let Some(p) = progress {
                                p.inc(h.1);
                            }
                            out.lock()
                                .expect("no panics hold it")
                                .insert(rel.clone(), h);
                        }
                        Err(e) => {
                            failed.lock().expect("no panics hold it").get_or_insert(e);
                            next.store(paths.len(), Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().expect("threads joined") {
        return Err(e);
    }
    Ok(out.into_inner().expect("threads joined"))
}
