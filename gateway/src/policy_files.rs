//! Policies from `POLICIES_DIR`: read at start and re-read when the files change; read-only
//! through the admin API.
//!
//! A file that does not parse is reported with a warning naming the file and the problem and
//! never stops the gateway: at start it is skipped; on reload, the version of that file that last
//! parsed stays active until a fixed one arrives. Changes are found by polling the directory's
//! names, sizes and modification times, and applied once two scans in a row agree (debounce).
//! Polling rather than inotify: it also sees Kubernetes ConfigMap updates (an atomic symlink
//! swap) and network file systems, where change notifications are unreliable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::policy::{PolicyDoc, parse_policy};

#[derive(Debug, Clone)]
pub(crate) struct FilePolicy {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) content: String,
    pub(crate) doc: Arc<PolicyDoc>,
    pub(crate) loaded_at: String,
}

/// Loads every `*.yaml` and `*.yml` file of `dir`, in file-name order; a file that no longer
/// parses keeps its entry from `previous`. A missing directory is not an error.
fn load_dir_with(dir: &Path, previous: &[FilePolicy]) -> Vec<FilePolicy> {
    if dir.as_os_str().is_empty() {
        // A guardian sidecar: signed bundles only.
        return Vec::new();
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(dir = %dir.display(), "no policies directory; only API-managed policies are active");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the policies directory; no file policies are active");
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut out: Vec<FilePolicy> = Vec::new();
    for path in paths {
        let content = match std::fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "policy file skipped: cannot read it");
                continue;
            }
        };
        let parsed = parse_policy(&content);
        let Some(doc) = parsed.doc else {
            for issue in &parsed.errors {
                tracing::warn!(file = %path.display(), line = issue.line, "policy file not loaded: {}", issue.message);
            }
            if let Some(old) = previous.iter().find(|p| p.path == path) {
                tracing::warn!(file = %path.display(), policy = %old.name, "keeping the last version of this file that parsed");
                if !out.iter().any(|p| p.name == old.name) {
                    out.push(old.clone());
                }
            }
            continue;
        };
        let name = doc.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if out.iter().any(|p| p.name == name) {
            tracing::warn!(file = %path.display(), policy = %name, "policy file skipped: another file already defines this policy name");
            continue;
        }
        out.push(FilePolicy {
            id: format!("file_{name}"),
            name,
            path,
            content,
            doc: Arc::new(doc),
            loaded_at: crate::clock::now_rfc3339(),
        });
    }
    out
}

/// Names, sizes and modification times of the policy files: what a change looks like.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .map(|p| {
            // Follow symlinks (ConfigMaps): the target's metadata is what changes.
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect();
    out.sort();
    out
}

/// Where file-like, read-only policies come from: `POLICIES_DIR` and an optional signed bundle.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub(crate) dir: PathBuf,
    /// `(bundle, minisign public key)`.
    pub(crate) bundle: Option<(PathBuf, PathBuf)>,
    /// The version of the bundle last verified and loaded (an empty bundle is one too).
    pub(crate) bundle_version: Arc<std::sync::Mutex<Option<u64>>>,
}

impl Sources {
    fn fingerprint(&self) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
        let mut out = fingerprint(&self.dir);
        if let Some((bundle, pubkey)) = &self.bundle {
            let mut sig = bundle.as_os_str().to_owned();
            sig.push(".minisig");
            for p in [bundle.clone(), PathBuf::from(sig), pubkey.clone()] {
                let meta = std::fs::metadata(&p).ok();
                out.push((
                    p,
                    meta.as_ref().map_or(0, |m| m.len()),
                    meta.and_then(|m| m.modified().ok()),
                ));
            }
        }
        out
    }

    /// Loads everything. A broken file keeps its last good version; a bundle whose signature
    /// does not verify is refused (logged and alerted) and the last verified one stays.
    pub(crate) fn load(
        &self,
        previous: &[FilePolicy],
        alerts: &crate::alerts::Alerts,
    ) -> Vec<FilePolicy> {
        let mut out = load_dir_with(&self.dir, previous);
        let Some((bundle, pubkey)) = &self.bundle else {
            return out;
        };
        let from_bundle = match crate::bundle::load(bundle, pubkey) {
            Ok((version, policies)) => {
                tracing::info!(bundle = %bundle.display(), version, count = policies.len(), "signed policy bundle verified and loaded");
                *self
                    .bundle_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(version);
                policies
            }
            Err(e) => {
                tracing::error!(bundle = %bundle.display(), "policy bundle refused: {e}");
                alerts.raise(crate::alerts::Alert::system(
                    "Policy Bundle Refused",
                    &format!("{e}; the last verified bundle stays active"),
                ));
                previous
                    .iter()
                    .filter(|p| &p.path == bundle)
                    .cloned()
                    .collect()
            }
        };
        for p in from_bundle {
            if out.iter().any(|o| o.name == p.name) {
                tracing::warn!(policy = %p.name, "the bundle's policy has the name of a POLICIES_DIR file; the file wins");
                continue;
            }
            out.push(p);
        }
        out
    }
}

/// Re-reads the sources when their files change, and swaps the new policies in.
pub(crate) fn spawn_watcher(
    state: crate::state::AppState,
    sources: Sources,
    every: std::time::Duration,
) {
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let scan = |s: Sources| async move {
            tokio::task::spawn_blocking(move || s.fingerprint())
                .await
                .unwrap_or_default()
        };
        let mut applied = scan(sources.clone()).await;
        let mut last_seen = applied.clone();
        loop {
            tokio::time::sleep(every).await;
            let now = scan(sources.clone()).await;
            // Debounce: act only when the files have stopped changing.
            if now != last_seen {
                last_seen = now;
                continue;
            }
            if now == applied {
                continue;
            }
            let previous = state.policies.files();
            let (src, alerts) = (sources.clone(), state.alerts.clone());
            let loaded = tokio::task::spawn_blocking(move || src.load(&previous, &alerts)).await;
            match loaded {
                Ok(files) => {
                    let count = files.len();
                    match state.policies.replace_files(files).await {
                        Ok(()) => {
                            tracing::info!(dir = %sources.dir.display(), count, "policy files reloaded")
                        }
                        Err(e) => {
                            tracing::error!(error = ?e, "policy files read, but the snapshot could not be rebuilt; the previous one stays active")
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reload failed; the previous snapshot stays active")
                }
            }
            applied = now;
        }
    });
}
