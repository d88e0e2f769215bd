//! Backups of a running site, and their restore to an empty host from the backup alone.
//!
//! A backup is a directory:
//! - `database.sqlite` (or `database.sqlite.age`, encrypted to the site's age recipient): the
//!   gateway's SQLite database, copied consistently while decisions go on
//!   (`GET /admin/backup/database`, SQLite's `VACUUM INTO`). On a gateway of a PostgreSQL
//!   control plane it holds what stays local to that gateway.
//! - `control-plane.pgdump` (or `.age`), on a PostgreSQL control plane when the operator gives
//!   its URL: the control plane as `pg_dump --format=custom` writes it ([`postgres`]: the
//!   real tools, driven), loaded by `restore` with `pg_restore` into an empty database.
//! - `audit/`: the audit log as the audit archive keeps it (`audit_archive`): every entry,
//!   proven against a checkpoint signed by the log's key, pulled after the database copy so it
//!   covers every entry the copy's index holds. `backup follow` pulls again and again, so the
//!   audit log's recovery point is seconds.
//! - `BACKUP.json`: what was backed up, from where, when, and what is not in it (the private
//!   keys: key custody stays with the site or its token).
//! - `SHA256SUMS` and `SHA256SUMS.minisig`, as on media: `sha256sum -c` and `minisign -V` check
//!   a backup with no network.
//!
//! A restore ([`restore::restore`]) verifies all of that before it writes anything, rebuilds the
//! log directory from the archived entries (its root must be the signed checkpoint's), puts the
//! database in place and leaves `restored.json`, which the gateway records in its own log at
//! its first start.

pub mod postgres;
pub mod restore;
pub mod take;

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::keys::{MediaKey, MediaPublicKey};
use crate::{fsx, sums};

/// The format `BACKUP.json` names.
pub const FORMAT: &str = "meshguard-backup/v1";
/// The database copy in a backup, clear or age-encrypted.
pub const DATABASE: &str = "database.sqlite";
pub const DATABASE_AGE: &str = "database.sqlite.age";
/// The audit archive in a backup.
pub const AUDIT: &str = "audit";

/// `BACKUP.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: String,
    pub taken_at: String,
    pub gateway: GatewayPart,
    pub database: DatabasePart,
    /// The PostgreSQL control plane's dump, when the backup holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlanePart>,
    pub audit: AuditPart,
    /// What a restore needs that is not in the backup, each with where it comes from.
    pub not_included: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPart {
    pub url: String,
    pub version: String,
    /// `sqlite` or `postgresql`.
    pub control_plane: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabasePart {
    pub file: String,
    pub encrypted: bool,
    /// What the copy holds.
    pub holds: String,
}

/// The PostgreSQL control plane, as `pg_dump` wrote it (no URL, no password: the operator
/// names the database at restore).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlanePart {
    pub file: String,
    pub encrypted: bool,
    /// `pg_dump --format=custom`.
    pub format: String,
    /// `pg_dump --version` of the tool that wrote it.
    pub dumped_with: String,
    /// Objects `pg_restore --list` read in the dump.
    pub objects: u64,
    /// What the dump holds.
    pub holds: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPart {
    pub dir: String,
    pub origin: String,
    /// The log's verifier key (public).
    pub vkey: String,
    /// Entries held, all proven against the signed checkpoint of this size.
    pub size: u64,
}

/// Writes `bytes` into the backup `out` atomically, as `clear`, or as `sealed` encrypted to
/// `recipients` when there are any; the name written, and whether it is encrypted.
fn write_sealed(
    out: &Path,
    bytes: Vec<u8>,
    (clear, sealed): (&str, &str),
    recipients: &[age::x25519::Recipient],
) -> Result<(String, bool)> {
    let (file, content) = if recipients.is_empty() {
        (clear, bytes)
    } else {
        let encrypted = meshguard_license::seal::encrypt_to(&bytes, recipients)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        (sealed, encrypted)
    };
    fsx::write_atomic(&out.join(file), &content)?;
    Ok((file.to_owned(), !recipients.is_empty()))
}

/// Writes `BACKUP.json`, then `SHA256SUMS` over every file and its signature by `key`.
fn seal(dir: &Path, manifest: &Manifest, key: &MediaKey) -> Result<()> {
    seal_reusing(dir, manifest, key, &std::collections::BTreeMap::new())
}

/// The files of a backup that never change once written: the database copy, the control
/// plane's dump and the audit archive's segments and checkpoints (the archive only adds files).
fn immutable(path: &str) -> bool {
    path.starts_with("database.")
        || path.starts_with("control-plane.")
        || path.starts_with("audit/segments/")
        || path.starts_with("audit/checkpoints/")
}

/// [`seal`], taking the digests of files that never change from `known` (a `SHA256SUMS` whose
/// signature was checked) instead of reading them again: a follow round then hashes only what
/// it wrote.
fn seal_reusing(
    dir: &Path,
    manifest: &Manifest,
    key: &MediaKey,
    known: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest)?;
    fsx::write_atomic(&dir.join("BACKUP.json"), &json)?;
    let files: Vec<String> = fsx::walk(dir)?
        .into_iter()
        .filter(|p| {
            !p.starts_with("SHA256SUMS") && !p.ends_with(".lock") && !p.contains(".partial")
        })
        .collect();
    let (reused, fresh): (Vec<String>, Vec<String>) = files
        .into_iter()
        .partition(|p| immutable(p) && known.contains_key(p));
    let mut hashes = sums::hash_all(dir, &fresh)?;
    for p in reused {
        let size = std::fs::metadata(dir.join(&p))?.len();
        hashes.insert(p.clone(), (known[&p].clone(), size));
    }
    let sums = sums::format(&hashes);
    let signature = key.sign(
        sums.as_bytes(),
        &format!(
            "meshguard backup of {} taken {}",
            manifest.audit.origin, manifest.taken_at
        ),
    )?;
    fsx::write_atomic(&dir.join("SHA256SUMS"), sums.as_bytes())?;
    fsx::write_atomic(&dir.join("SHA256SUMS.minisig"), signature.as_bytes())?;
    Ok(())
}

/// The backup's manifest and its signed `SHA256SUMS`, the signature checked by `pubkey` (the
/// files are not read: for extending a backup this process signed).
fn signed_sums(
    dir: &Path,
    pubkey: &MediaPublicKey,
) -> Result<(Manifest, std::collections::BTreeMap<String, String>)> {
    let sums_text = std::fs::read(dir.join("SHA256SUMS"))
        .with_context(|| format!("{} has no SHA256SUMS: not a backup", dir.display()))?;
    let signature = std::fs::read_to_string(dir.join("SHA256SUMS.minisig"))
        .context("the backup has no SHA256SUMS.minisig")?;
    pubkey.verify(&sums_text, &signature, "SHA256SUMS")?;
    let listed = sums::parse(
        std::str::from_utf8(&sums_text).context("SHA256SUMS is not text")?,
        "SHA256SUMS",
    )?;
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join("BACKUP.json"))?)
        .context("BACKUP.json is not a backup manifest")?;
    let listed_manifest = listed.get("BACKUP.json").cloned().unwrap_or_default();
    if fsx::sha256_file(&dir.join("BACKUP.json"))?.0 != listed_manifest {
        bail!("BACKUP.json does not match SHA256SUMS: it changed after the backup was signed");
    }
    Ok((manifest, listed))
}

/// Checks a backup with no network: the signature of `SHA256SUMS` by `pubkey`, then every file
/// it lists, and that it lists every file there is. Returns the manifest and the signing key's
/// id.
pub fn verify(dir: &Path, pubkey: &MediaPublicKey) -> Result<(Manifest, String)> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| {
            format!(
                "{} has no {name}: it is not a backup, or not a whole one",
                dir.display()
            )
        })
    };
    let sums_text = read("SHA256SUMS")?;
    let signature =
        String::from_utf8(read("SHA256SUMS.minisig")?).context("SHA256SUMS.minisig is not text")?;
    pubkey.verify(&sums_text, &signature, "SHA256SUMS")?;
    let listed = sums::parse(
        std::str::from_utf8(&sums_text).context("SHA256SUMS is not text")?,
        "SHA256SUMS",
    )?;
    for (path, want) in &listed {
        let (got, _) = fsx::sha256_file(&dir.join(path))
            .with_context(|| format!("{path}, listed in SHA256SUMS, cannot be read"))?;
        if &got != want {
            bail!("{path} does not match SHA256SUMS: it changed after the backup was signed");
        }
    }
    for path in fsx::walk(dir)? {
        let ours = path.starts_with("SHA256SUMS") || path.ends_with(".lock");
        if !ours && !listed.contains_key(&path) {
            bail!("{path} is in the backup but not in SHA256SUMS: it was added after signing");
        }
    }
    let manifest: Manifest = serde_json::from_slice(&read("BACKUP.json")?)
        .context("BACKUP.json is not a backup manifest")?;
    if manifest.format != FORMAT {
        bail!(
            "BACKUP.json is of format {:?}; this meshguard-bundle reads {FORMAT}",
            manifest.format
        );
    }
    Ok((manifest, pubkey.key_id()))
}
