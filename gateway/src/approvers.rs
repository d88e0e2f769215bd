//! The site's change approvers: a list the site signs with its own minisign key and names in
//! `CHANGE_APPROVERS` (with `CHANGE_APPROVERS_PUBKEY`). With a list, a policy change is taken
//! only if its `X-MeshGuard-Approver` is on it; the list in force is written into the audit
//! log with the gateway's configuration, so evidence can show each change was approved by
//! someone the site had named beforehand. The list is read at start: a new one takes a restart
//! (and so a new configuration entry).

use std::path::Path;

use serde::Deserialize;

const FORMAT: &str = "meshguard-change-approvers/v1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc {
    format: String,
    version: u64,
    #[serde(default)]
    created_at: Option<String>,
    approvers: Vec<String>,
}

/// A verified approver list.
#[derive(Debug, Clone)]
pub(crate) struct Approvers {
    version: u64,
    sha256: String,
    names: Vec<String>,
}

impl Approvers {
    /// Reads and verifies the list; an unsigned, wrongly signed, malformed or empty list is an
    /// error naming the file and what to do.
    pub(crate) fn load(path: &Path, pubkey: &Path) -> Result<Self, String> {
        let file = crate::signed_file::read(path, pubkey, "a change approver list")?;
        let doc: Doc = serde_json::from_slice(&file.bytes).map_err(|e| {
            format!(
                "{} is not a change approver list ({FORMAT}): {e}",
                path.display()
            )
        })?;
        if doc.format != FORMAT {
            return Err(format!(
                "{}: format {:?} is not {FORMAT:?}",
                path.display(),
                doc.format
            ));
        }
        let names: Vec<String> = doc
            .approvers
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if names.is_empty() {
            return Err(format!(
                "{} names no approver: a list that approves nobody would refuse every policy change; name at least one",
                path.display()
            ));
        }
        let _ = doc.created_at;
        Ok(Self {
            version: doc.version,
            sha256: file.sha256,
            names,
        })
    }

    /// Whether `approver` is on the list (exact match, as the site spelt it).
    pub(crate) fn names(&self, approver: &str) -> bool {
        self.names.iter().any(|n| n == approver)
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Refuses a list older than one this gateway has already enforced (recorded in `seen`),
    /// then records this one's version: putting back an older signed list would bring back
    /// approvers the site has since removed.
    pub(crate) fn not_older_than_seen(&self, seen: &Path) -> Result<(), String> {
        let highest = match std::fs::read_to_string(seen) {
            Ok(t) => meshguard_common::decimal::parse_u64(t.trim()).ok_or_else(|| {
                format!(
                    "{} does not hold a version number; restore it or remove it knowingly",
                    seen.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", seen.display())),
        };
        if self.version < highest {
            return Err(format!(
                "CHANGE_APPROVERS is version {}, older than version {highest} this gateway has already enforced; refused (put the newest signed list in its place)",
                self.version
            ));
        }
        meshguard_common::fsx::write_atomic(
            seen,
            format!("{}\n", self.version).as_bytes(),
            meshguard_common::fsx::Mode::Public,
        )
        .map_err(|e| {
            format!(
                "cannot record the approver list's version in {}: {e}",
                seen.display()
            )
        })
    }

    /// What the configuration entries say of the list.
    pub(crate) fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "sha256": self.sha256,
            "approvers": self.names,
            "signed": true,
        })
    }
}
