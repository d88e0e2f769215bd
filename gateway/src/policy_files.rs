//! Policies from `POLICIES_DIR`: read once at start, read-only through the admin API.
//!
//! A file that does not parse is skipped with a warning naming the file and the problem; it never
//! stops the gateway. Hot reload comes with the data-plane work.

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

/// Loads every `*.yaml` and `*.yml` file of `dir`, in file-name order. A missing directory is
/// not an error: the gateway then has API policies only.
pub(crate) fn load_dir(dir: &Path) -> Vec<FilePolicy> {
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
                tracing::warn!(file = %path.display(), line = issue.line, "policy file skipped: {}", issue.message);
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
