//! Restoring a backup onto an empty host, with no network: verified first, written last.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::json;

use super::postgres::{self, DatabaseUrl};
use super::{AUDIT, ControlPlanePart, Manifest};
use crate::audit_archive;
use crate::fsx;
use crate::keys::MediaPublicKey;
use meshguard_tlog::{merkle, tiles};

/// Where a restore writes: the gateway's `DB_PATH` and `AUDIT_LOG_DIR`, as the gateway takes
/// them by default (`meshguard.db` and `audit-log` in one data directory), and the empty
/// PostgreSQL database a backup's control-plane dump is loaded into.
#[derive(Debug)]
pub struct Target {
    pub db_path: PathBuf,
    pub log_dir: PathBuf,
    pub control_plane: Option<DatabaseUrl>,
}

impl Target {
    pub fn in_data_dir(dir: &Path) -> Self {
        Self {
            db_path: dir.join("meshguard.db"),
            log_dir: dir.join("audit-log"),
            control_plane: None,
        }
    }
}

/// What a restore did, and what the site must still put in place.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub origin: String,
    pub size: u64,
    pub vkey: String,
    pub signed_by: String,
    /// Entries of the database copy's index (the log holds these and more).
    pub indexed: u64,
    pub not_included: Vec<String>,
}

/// Restores `backup` onto `target`, which must hold neither a database nor a log: checks the
/// backup's signature by `pubkey` and every file, verifies the audit archive (every chain, and
/// the tree at every checkpoint against its signature), opens the database copy (`identity`
/// decrypts an encrypted one) and checks its index against the log, loads the control plane's
/// dump, if the backup holds one, into the target's empty database, rebuilds the log directory
/// from the archived entries and checks its root against the signed checkpoint, then writes the
/// database and `restored.json`. `lost` names the entries `from..to` the site is known to have
/// held after the backup (a witness's cosigned size shows it), recorded as lost.
pub fn restore(
    backup: &Path,
    pubkey: &MediaPublicKey,
    target: &Target,
    identities: &meshguard_license::seal::Identities,
    lost: Option<(u64, u64)>,
) -> Result<Restored> {
    let (manifest, signed_by) = super::verify(backup, pubkey)?;
    refuse_occupied(target)?;
    let control_plane = control_plane_target(&manifest, target)?;
    let archive = backup.join(AUDIT);
    let verified = audit_archive::verify(&archive, Some(&manifest.audit.vkey))
        .context("the backup's audit log does not verify")?;
    if verified.entries != manifest.audit.size || verified.origin != manifest.audit.origin {
        bail!(
            "BACKUP.json says {} entries of {}, and its audit archive holds {} of {}",
            manifest.audit.size,
            manifest.audit.origin,
            verified.entries,
            verified.origin
        );
    }
    if let Some((from, to)) = lost
        && (from != manifest.audit.size || to <= from)
    {
        bail!(
            "the lost range must start where the backup ends ({}) and end after it; got {from}..{to}",
            manifest.audit.size
        );
    }
    let database = open_sealed(
        backup,
        &manifest.database.file,
        manifest.database.encrypted,
        identities,
    )?;
    let indexed = index_size(&database)?;
    if indexed > manifest.audit.size {
        bail!(
            "the database copy indexes {indexed} audit entries, more than the {} the backup's log holds: the backup is not consistent",
            manifest.audit.size
        );
    }
    if let Some((url, part)) = control_plane {
        let dump = open_sealed(backup, &part.file, part.encrypted, identities)?;
        postgres::load(url, &dump)?;
    }
    rebuild_log(&archive, &manifest, &target.log_dir)?;
    write_database(&target.db_path, &database, &archive, &manifest)?;
    write_marker(backup, &manifest, &signed_by, lost, &target.db_path)?;
    Ok(Restored {
        origin: manifest.audit.origin.clone(),
        size: manifest.audit.size,
        vkey: manifest.audit.vkey.clone(),
        signed_by,
        indexed,
        not_included: manifest.not_included.clone(),
    })
}

fn refuse_occupied(target: &Target) -> Result<()> {
    if target.db_path.exists() {
        bail!(
            "{} exists: a restore writes to an empty data directory only (move the old one aside first)",
            target.db_path.display()
        );
    }
    let log_in_use = std::fs::read_dir(&target.log_dir).is_ok_and(|mut d| d.next().is_some());
    if log_in_use {
        bail!(
            "{} is not empty: a restore writes a log directory of its own (move the old one aside first)",
            target.log_dir.display()
        );
    }
    Ok(())
}

/// Where the backup's control-plane dump goes: both or neither of a dump and an empty
/// database to load it into.
fn control_plane_target<'a>(
    manifest: &'a Manifest,
    target: &'a Target,
) -> Result<Option<(&'a DatabaseUrl, &'a ControlPlanePart)>> {
    match (&target.control_plane, &manifest.control_plane) {
        (Some(url), Some(part)) => {
            postgres::refuse_non_empty(url)?;
            Ok(Some((url, part)))
        }
        (None, Some(_)) => bail!(
            "the backup holds the PostgreSQL control plane ({}): name an empty database to load it into with --database-url (or DATABASE_URL)",
            manifest
                .control_plane
                .as_ref()
                .map_or("", |p| p.file.as_str())
        ),
        (Some(_), None) => bail!(
            "the backup holds no control-plane dump (its gateway was on {}, or it was taken without --database-url): there is nothing to load into that database",
            manifest.gateway.control_plane
        ),
        (None, None) => Ok(None),
    }
}

/// A file of the backup, decrypted when it is held encrypted.
fn open_sealed(
    backup: &Path,
    file: &str,
    encrypted: bool,
    identities: &meshguard_license::seal::Identities,
) -> Result<Vec<u8>> {
    let path = backup.join(file);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if !encrypted {
        return Ok(bytes);
    }
    identities
        .open(bytes, file)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The highest sequence number the copy's audit index holds, read from a private temporary copy
/// (SQLite reads files, not buffers), with the copy's own integrity check.
fn index_size(database: &[u8]) -> Result<u64> {
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), database)?;
    let conn = rusqlite::Connection::open_with_flags(
        tmp.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        bail!("the database copy is damaged: SQLite's quick_check says {check}");
    }
    // `audit_index` since the gateway's schema 14; `audit_entries` in copies made before it
    // (and in one made while the first start after the upgrade had not yet dropped it).
    let mut held = None;
    for table in ["audit_index", "audit_entries"] {
        if let Ok(seq) = conn.query_row(&format!("SELECT max(seq) FROM {table}"), [], |r| {
            r.get::<_, Option<i64>>(0)
        }) {
            held = Some(held.unwrap_or(0).max(seq.unwrap_or(0)));
        }
    }
    let seq =
        held.context("the database copy has no audit index: it is not a gateway's database")?;
    Ok(seq as u64)
}

/// The log directory rebuilt from the archived entries, as the gateway writes it: each entry in
/// the entry bundles, the hash tiles, the runs of entries ingested from other logs in
/// `sources`, and the latest signed checkpoint, published only once the rebuilt tree's root is
/// the one it signs.
fn rebuild_log(archive: &Path, manifest: &Manifest, log_dir: &Path) -> Result<()> {
    let mut writer = tiles::TileWriter::open(log_dir)?;
    let mut runs: Vec<(u64, u64, String)> = Vec::new();
    audit_archive::for_each_line(archive, |seq, source, body| {
        if source != manifest.audit.origin {
            match runs.last_mut() {
                Some((first, count, s)) if s == source && *first + *count == seq => *count += 1,
                _ => runs.push((seq, 1, source.to_owned())),
            }
        }
        writer.append(body.as_bytes(), merkle::leaf_hash(body.as_bytes()));
        if writer.size().is_multiple_of(65_536) {
            sync(&mut writer)?;
        }
        Ok(())
    })?;
    sync(&mut writer)?;
    for (first, count, source) in &runs {
        writer.add_run(*first, *count, source)?;
    }
    let note = audit_archive::checkpoint_note(archive, manifest.audit.size)?;
    let signed = checkpoint_root(&note)?;
    if writer.frontier().root() != signed {
        bail!("the rebuilt log's root is not the one its checkpoint signs: nothing was restored");
    }
    writer.publish(&note)?;
    Ok(())
}

/// Writes the flushed entries and makes them durable, sealing full bundles.
fn sync(writer: &mut tiles::TileWriter) -> Result<()> {
    let segments = writer.flush()?;
    for (i, s) in segments.iter().enumerate() {
        if segments[i + 1..].iter().all(|t| t.bundle != s.bundle) {
            s.file.sync_data()?;
        }
        if s.sealed {
            tiles::seal(writer.dir(), s.bundle)?;
        }
    }
    tiles::sync_staging(writer.dir())?;
    Ok(())
}

/// The root a checkpoint note signs (its third line, base64).
fn checkpoint_root(note: &str) -> Result<[u8; 32]> {
    use base64::Engine as _;
    let line = note
        .lines()
        .nth(2)
        .context("the checkpoint has no root line")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .context("the checkpoint's root is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the checkpoint's root is not 32 bytes"))
}

/// Writes the database copy beside `db_path`, adds to its `audit_checkpoints` the archive's
/// signed checkpoints it does not hold (signed after the copy was taken; their time is the
/// backup's, by which they existed), and moves it into place.
fn write_database(
    db_path: &Path,
    database: &[u8],
    archive: &Path,
    manifest: &Manifest,
) -> Result<()> {
    if let Some(dir) = db_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let staged = db_path.with_extension("db.restoring");
    fsx::write_atomic(&staged, database)?;
    {
        let conn = rusqlite::Connection::open(&staged)?;
        let held: Option<i64> =
            conn.query_row("SELECT max(size) FROM audit_checkpoints", [], |r| r.get(0))?;
        let mut insert = conn.prepare(
            "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for size in audit_archive::checkpoint_sizes(archive)? {
            if held.is_some_and(|h| size as i64 <= h) {
                continue;
            }
            let note = audit_archive::checkpoint_note(archive, size)?;
            let root = note.lines().nth(2).unwrap_or_default().to_owned();
            insert.execute(rusqlite::params![
                size as i64,
                root,
                note,
                manifest.taken_at
            ])?;
        }
    }
    std::fs::File::open(&staged)?.sync_all()?;
    std::fs::rename(&staged, db_path)
        .with_context(|| format!("cannot move the database into {}", db_path.display()))?;
    if let Some(dir) = db_path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `restored.json` beside the database: the gateway's first start records it in the log.
fn write_marker(
    backup: &Path,
    manifest: &Manifest,
    signed_by: &str,
    lost: Option<(u64, u64)>,
    db_path: &Path,
) -> Result<()> {
    let name = backup
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| backup.display().to_string());
    let mut marker = json!({
        "format": "meshguard-restore/v1",
        "backup": name,
        "takenAt": manifest.taken_at,
        "restoredAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "origin": manifest.audit.origin,
        "size": manifest.audit.size,
        "signedBy": signed_by,
    });
    if let Some((from, to)) = lost {
        marker["lost"] = json!({"from": from, "to": to});
    }
    let path = db_path.with_file_name("restored.json");
    fsx::write_atomic(&path, serde_json::to_vec_pretty(&marker)?.as_slice())?;
    Ok(())
}
