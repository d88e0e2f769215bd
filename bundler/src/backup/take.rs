//! Taking a backup of a running gateway over its admin API, and following its audit log.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::postgres::{self, DatabaseUrl};
use super::{AUDIT, AuditPart, DATABASE, DATABASE_AGE, DatabasePart, GatewayPart, Manifest, seal};
use crate::audit_archive::{self, Source};
use crate::keys::MediaKey;

/// SQLite's file header: a database copy must start with it.
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// Backs up the gateway `source` into `out` (new or empty): the database copy first, then the
/// PostgreSQL control plane's dump when `control_plane` names its database, then the audit log
/// up to a checkpoint signed after them, then the manifest and the signature.
pub fn backup(
    source: &Source,
    out: &Path,
    key: &MediaKey,
    recipients: &[age::x25519::Recipient],
    control_plane: Option<&DatabaseUrl>,
) -> Result<Manifest> {
    refuse_non_empty(out)?;
    let client = source.client()?;
    let info: Value = source
        .get(&client, reqwest::Method::GET, "/admin/info")?
        .json()
        .context("/admin/info did not answer JSON")?;
    let backend = info["controlPlane"]["backend"]
        .as_str()
        .unwrap_or("sqlite")
        .to_owned();
    if control_plane.is_some() && backend != "postgresql" {
        bail!(
            "the gateway's control plane is {backend}, not PostgreSQL: --database-url is for a gateway on DATABASE_URL (its SQLite database is in the backup already)"
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let database = copy_database(source, &client, out, recipients)?;
    let dumped = control_plane
        .map(|url| postgres::dump(url, out, recipients))
        .transpose()?;
    let pulled = audit_archive::pull(&out.join(AUDIT), source, None)?;
    let verified = audit_archive::verify(&out.join(AUDIT), None)?;
    let vkey = archive_vkey(&out.join(AUDIT))?;
    let not_included = not_included(&backend, dumped.is_some());
    let manifest = Manifest {
        format: super::FORMAT.to_owned(),
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        gateway: GatewayPart {
            url: source.url.clone(),
            version: info["version"].as_str().unwrap_or_default().to_owned(),
            control_plane: backend.clone(),
        },
        database: DatabasePart {
            holds: if backend == "postgresql" {
                "this gateway's local state: its audit log's index, the sidecars it holds entries for".into()
            } else {
                "the control plane (agents, policies, alert channels with their secrets sealed, changes, approvals) and the audit log's index".into()
            },
            ..database
        },
        control_plane: dumped,
        audit: AuditPart {
            dir: AUDIT.to_owned(),
            origin: pulled.origin,
            vkey,
            size: verified.entries,
        },
        not_included,
    };
    seal(out, &manifest, key)?;
    Ok(manifest)
}

/// Pulls the audit log again into an existing backup (its recovery point then is now) and
/// signs the backup anew; the database copy stays as it was taken.
///
/// Each round costs what the log gained, not the backup's size: the backup's signature is
/// checked (not every file again), the pull proves the new entries against a fresh checkpoint
/// and the archive's frontier, and only the files written are hashed anew. `backup verify` checks
/// the whole.
pub fn follow_once(source: &Source, dir: &Path, key: &MediaKey) -> Result<Manifest> {
    let (mut manifest, known) = super::signed_sums(dir, &key.public())?;
    let pulled = audit_archive::pull(&dir.join(AUDIT), source, Some(&manifest.audit.vkey))?;
    manifest.audit.size = pulled.to;
    super::seal_reusing(dir, &manifest, key, &known)?;
    Ok(manifest)
}

/// Removes all but the `keep` newest backups in `dir` (its subdirectories holding a
/// `BACKUP.json`, named after their time); returns what it removed. Anything else there is left.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<std::path::PathBuf>> {
    if keep == 0 {
        bail!("--keep 0 would remove the backup just taken: keep at least 1");
    }
    let mut backups: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("BACKUP.json").is_file())
        .collect();
    backups.sort();
    let surplus = backups.len().saturating_sub(keep);
    let old: Vec<_> = backups.into_iter().take(surplus).collect();
    for p in &old {
        std::fs::remove_dir_all(p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(old)
}

fn refuse_non_empty(out: &Path) -> Result<()> {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        bail!(
            "{} is not empty: a backup is written into a new directory (`backup follow` updates one)",
            out.display()
        );
    }
    Ok(())
}

/// The gateway's consistent database copy, written to `out` (encrypted when `recipients`).
fn copy_database(
    source: &Source,
    client: &reqwest::blocking::Client,
    out: &Path,
    recipients: &[age::x25519::Recipient],
) -> Result<DatabasePart> {
    let bytes = source
        .get(client, reqwest::Method::GET, "/admin/backup/database")?
        .bytes()
        .context("the database copy was cut off")?;
    if !bytes.starts_with(SQLITE_HEADER) {
        bail!("the gateway's database copy is not an SQLite database");
    }
    let (file, encrypted) =
        super::write_sealed(out, bytes.to_vec(), (DATABASE, DATABASE_AGE), recipients)?;
    Ok(DatabasePart {
        file,
        encrypted,
        holds: String::new(),
    })
}

/// The log key the archive pinned.
fn archive_vkey(dir: &Path) -> Result<String> {
    let state: Value = serde_json::from_slice(&std::fs::read(dir.join("ARCHIVE.json"))?)
        .context("ARCHIVE.json is not JSON")?;
    state["vkey"]
        .as_str()
        .map(str::to_owned)
        .context("ARCHIVE.json names no log key")
}

fn not_included(control_plane: &str, dumped: bool) -> Vec<String> {
    let mut out = vec![
        "the audit log's signing key (audit-log.key, or AUDIT_KEY_URI's token): the restored gateway continues the log only with the key whose verifier key is audit.vkey".to_owned(),
        "the secrets key (secrets.key, SECRETS_KEY or SECRETS_KEY_URI): alert channels' secrets are sealed with it".to_owned(),
        "the policy-bundle signing key (policy-bundle.key, or POLICY_BUNDLE_KEY_URI)".to_owned(),
        "the gateway's configuration (its environment or chart values), its POLICIES_DIR files and its LICENSE_DIR: the site's own records".to_owned(),
    ];
    match (control_plane == "postgresql", dumped) {
        (true, false) => out.push("the PostgreSQL control plane: take the backup with --database-url (pg_dump), or keep pg_basebackup and WAL archiving (docs/operations.md)".to_owned()),
        (true, true) => out.push("the PostgreSQL control plane's changes after its dump: only WAL archiving gives a later recovery point (docs/operations.md)".to_owned()),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prune;

    #[test]
    fn prune_keeps_the_newest_backups_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["20261201T000000Z", "20261203T000000Z", "20261202T000000Z"] {
            std::fs::create_dir_all(d.join(name)).unwrap();
            std::fs::write(d.join(name).join("BACKUP.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(d.join("notes")).unwrap();
        let removed = prune(d, 2).unwrap();
        assert_eq!(removed, vec![d.join("20261201T000000Z")]);
        assert!(d.join("20261202T000000Z").is_dir() && d.join("20261203T000000Z").is_dir());
        assert!(d.join("notes").is_dir(), "not a backup: left alone");
        assert!(
            prune(d, 0).is_err(),
            "keeping none would remove the new backup"
        );
    }
}
