//! The audit log's checkpoint keys over time (table `audit_keys`), the check at start that the
//! key file is the key the log is signed with, and key rotation.
//!
//! A log is signed by one key at a time. Each key's row says from which tree size it signs
//! (`first_size`) and, once rotated out, the size of the handoff checkpoint (`retired_size`):
//! the checkpoint over the rotation entry, signed by the new key and, unless the old one was
//! lost, by the old key too. Older checkpoints keep verifying with the key of their range.
//!
//! A missing or different key file is refused at start: a gateway that silently made itself a
//! new key would sign checkpoints no verifier of the old ones accepts, and would let whoever
//! can delete a file start a new history. A new key comes only from [`rotate`], which records
//! the change in the log itself.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OptionalExtension, params};

use super::note::{self, LogKey};

/// Where the log's key is: a key file, or a PKCS#11 token named by a URI (which may hold a PIN,
/// so it is never printed).
#[derive(Clone)]
pub(crate) enum KeySource {
    File(PathBuf),
    Token(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Token(_) => f.write_str("Token(pkcs11:..)"),
        }
    }
}

impl KeySource {
    /// The key, or None when its file does not exist. A token key that cannot be opened is an
    /// error: the token holds it or nothing does.
    fn load(&self, origin: &str) -> anyhow::Result<Option<LogKey>> {
        Ok(match self {
            Self::File(path) => LogKey::load(path, origin)?,
            Self::Token(uri) => Some(LogKey::from_token(uri, origin)?),
        })
    }

    fn shown(&self, key: Option<&LogKey>) -> String {
        match (self, key) {
            (Self::File(p), _) => p.display().to_string(),
            (Self::Token(_), Some(k)) => k.location(),
            (Self::Token(_), None) => "in the PKCS#11 token".to_owned(),
        }
    }
}

/// One key of the log and the checkpoint sizes it signs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyRecord {
    pub(crate) vkey: String,
    pub(crate) first_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retired_size: Option<u64>,
}

impl KeyRecord {
    /// Whether this key may have signed the checkpoint of `size`.
    pub(crate) fn covers(&self, size: u64) -> bool {
        self.first_size <= size && self.retired_size.is_none_or(|r| size <= r)
    }
}

/// The key ID part of a vkey (`name+<id>+key`), for messages.
pub(crate) fn key_id(vkey: &str) -> &str {
    vkey.split('+').nth(1).unwrap_or(vkey)
}

pub(crate) fn records(conn: &Connection) -> rusqlite::Result<Vec<KeyRecord>> {
    let mut stmt =
        conn.prepare("SELECT vkey, first_size, retired_size FROM audit_keys ORDER BY first_size")?;
    stmt.query_map([], |r| {
        Ok(KeyRecord {
            vkey: r.get(0)?,
            first_size: r.get::<_, i64>(1)? as u64,
            retired_size: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
        })
    })?
    .collect()
}

/// Where a rotation keeps the new key until the log has recorded it.
fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// The latest signed checkpoint: `(size, note)`.
pub(crate) fn latest_checkpoint(conn: &Connection) -> rusqlite::Result<Option<(u64, String)>> {
    conn.query_row(
        "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
    .optional()
}

fn insert(conn: &Connection, vkey: &str, first_size: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_keys (vkey, first_size, added_at) VALUES (?1, ?2, ?3)",
        params![vkey, first_size as i64, crate::clock::now_rfc3339()],
    )?;
    Ok(())
}

/// The key that signs the log's checkpoints, from `source`, checked against the log in `conn`:
/// it must be the log's current key. A fresh log gets a new key file (0600); a log written
/// before keys were recorded adopts the key if it verifies the latest checkpoint.
pub(crate) fn open_signing_key(
    conn: &Connection,
    source: &KeySource,
    origin: &str,
) -> anyhow::Result<LogKey> {
    let known = records(conn)?;
    let current = known.iter().find(|k| k.retired_size.is_none());
    if let KeySource::File(path) = source {
        finish_interrupted_rotation(path, origin, current)?;
    }
    let key = source.load(origin)?;
    let shown = source.shown(key.as_ref());
    match (current, key) {
        (Some(c), Some(k)) if k.vkey() == c.vkey => Ok(k),
        (Some(c), Some(k)) => bail!(
            "the audit log key {shown} is key {}, but this log's checkpoints since entry {} are signed by key {} ({}); give that key (restore its file from backup, or the URI of the token key a rotation moved to). A new key is taken only by `meshguard-gateway --rotate-audit-key` (docs/keys.md)",
            key_id(&k.vkey()),
            c.first_size,
            key_id(&c.vkey),
            c.vkey
        ),
        (Some(c), None) => bail!(
            "the audit log key {shown} is missing, and this log's checkpoints are signed by key {} ({}); restore the file from backup. If the key is lost for good, `meshguard-gateway --rotate-audit-key --audit-key-lost` starts a new key and records the loss in the log (docs/keys.md)",
            key_id(&c.vkey),
            c.vkey
        ),
        (None, key) => match (latest_checkpoint(conn)?, key) {
            (Some((size, checkpoint)), Some(k)) => {
                note::verify_checkpoint(&k.vkey(), &checkpoint).map_err(|e| {
                    anyhow::anyhow!(
                        "the audit log key {shown} (key {}) does not verify this log's latest checkpoint (size {size}: {e}); restore the key that signed it from backup (docs/keys.md)",
                        key_id(&k.vkey())
                    )
                })?;
                insert(conn, &k.vkey(), 0)?;
                Ok(k)
            }
            (Some((size, _)), None) => bail!(
                "the audit log key {shown} is missing, and this log holds signed checkpoints (the latest covers {size} entries); restore the key file from backup. If it is lost for good, `meshguard-gateway --rotate-audit-key --audit-key-lost` starts a new key and records the loss in the log (docs/keys.md)"
            ),
            (None, Some(k)) => {
                insert(conn, &k.vkey(), 0)?;
                Ok(k)
            }
            (None, None) => {
                let KeySource::File(path) = source else {
                    unreachable!("a token key is loaded or refused");
                };
                let k = LogKey::generate(origin);
                k.save(path)?;
                insert(conn, &k.vkey(), 0)?;
                tracing::info!(key = %shown, vkey = %k.vkey(), "new audit log key created");
                Ok(k)
            }
        },
    }
}

/// A rotation stopped between recording the new key in the log and renaming its file into
/// place: finish it. A new key the log never recorded is removed.
fn finish_interrupted_rotation(
    path: &Path,
    origin: &str,
    current: Option<&KeyRecord>,
) -> anyhow::Result<()> {
    let pending = pending_path(path);
    let Some(staged) = LogKey::load(&pending, origin)? else {
        return Ok(());
    };
    if current.is_some_and(|c| c.vkey == staged.vkey()) {
        meshguard_common::fsx::rename_durably(&pending, path)
            .with_context(|| format!("cannot move {} to {}", pending.display(), path.display()))?;
        tracing::warn!(key = %path.display(), "finished a key rotation that stopped before its new key file was in place");
    } else {
        std::fs::remove_file(&pending)
            .with_context(|| format!("cannot remove {}", pending.display()))?;
        tracing::warn!(key = %pending.display(), "removed the new key of a rotation the log never recorded");
    }
    Ok(())
}

/// What a rotation did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rotated {
    pub(crate) old_vkey: Option<String>,
    pub(crate) new_vkey: String,
    /// The size of the handoff checkpoint (the rotation entry is its last entry).
    pub(crate) size: u64,
    /// Whether the old key signed the handoff checkpoint too (not when it was lost).
    pub(crate) old_key_signed: bool,
    pub(crate) checkpoint: String,
    /// What the operator does next.
    pub(crate) next_step: String,
}

/// Replaces the log's key: a `key_rotation` entry naming the old and the new key, and the
/// checkpoint over it signed by the new key and (unless `lost`) the old one, are committed
/// together with the key records. The new key is the token key `next` names, or else a new key
/// file, staged beside the old one and renamed over it once the log has recorded it.
pub(crate) fn rotate(
    db_path: &Path,
    log_dir: &Path,
    source: &KeySource,
    origin: &str,
    lost: bool,
    next: Option<&str>,
) -> anyhow::Result<Rotated> {
    let conn = super::store::open_conn(db_path)?;
    let old = if lost {
        refuse_a_lost_key_that_opens(&conn, source, origin)?;
        None
    } else {
        Some(open_signing_key(&conn, source, origin)?)
    };
    let current = records(&conn)?
        .into_iter()
        .find(|r| r.retired_size.is_none());
    drop(conn);
    let (new, staged) = new_key(source, origin, next)?;
    if current.as_ref().is_some_and(|c| c.vkey == new.vkey()) {
        bail!("the new key is the log's current key; name another key");
    }
    let prepared = super::Prepared::new(rotation_entry(current.as_ref(), &new, lost));
    let signing_vkey = current
        .as_ref()
        .map_or_else(|| new.vkey(), |c| c.vkey.clone());
    let mut writer = super::store::Writer::open(db_path, log_dir, origin, &signing_vkey)?;
    let result = writer.rotate(
        prepared,
        &new,
        old.as_ref(),
        current.as_ref().map(|c| c.vkey.as_str()),
    );
    let (size, checkpoint) = match result {
        Ok(done) => done,
        Err(e) => {
            if let Some((pending, _)) = &staged {
                let _ = std::fs::remove_file(pending);
            }
            return Err(e.context("the rotation was not recorded; the old key stays in use"));
        }
    };
    let next_step = put_new_key_in_place(staged.as_ref(), &new)?;
    Ok(Rotated {
        old_vkey: current.map(|c| c.vkey),
        new_vkey: new.vkey(),
        size,
        old_key_signed: old.is_some(),
        checkpoint,
        next_step,
    })
}

/// With `--audit-key-lost`, the key may not open at all (that is why it is lost); one that
/// does must be neither the log's current key nor a file the new key would replace.
fn refuse_a_lost_key_that_opens(
    conn: &rusqlite::Connection,
    source: &KeySource,
    origin: &str,
) -> anyhow::Result<()> {
    let Ok(Some(k)) = source.load(origin) else {
        return Ok(());
    };
    let current = records(conn)?
        .into_iter()
        .find(|r| r.retired_size.is_none());
    if current.as_ref().is_some_and(|c| c.vkey == k.vkey()) {
        bail!(
            "--audit-key-lost, but {} holds this log's current key; rotate without --audit-key-lost so the old key signs the handoff",
            source.shown(Some(&k))
        );
    }
    if let KeySource::File(path) = source {
        bail!(
            "--audit-key-lost, but {} holds a key (key {}) that is not this log's; move it away first, keeping it in case it is needed",
            path.display(),
            key_id(&k.vkey())
        );
    }
    Ok(())
}

/// The new key: the token key `next` names, or a new key file staged beside the old one
/// (returned with the path it replaces once the log has recorded it).
fn new_key(
    source: &KeySource,
    origin: &str,
    next: Option<&str>,
) -> anyhow::Result<(LogKey, Option<(PathBuf, PathBuf)>)> {
    match (next, source) {
        (Some(uri), _) => Ok((LogKey::from_token(uri, origin)?, None)),
        (None, KeySource::File(path)) => {
            let new = LogKey::generate(origin);
            let pending = pending_path(path);
            new.save(&pending)?;
            Ok((new, Some((pending, path.clone()))))
        }
        (None, KeySource::Token(_)) => bail!(
            "the audit key is in a PKCS#11 token: make the new key in the token and name it with --new-audit-key-uri (docs/keys.md)"
        ),
    }
}

/// The `key_rotation` entry: which key replaced which, and whether the old one was lost.
fn rotation_entry(
    current: Option<&KeyRecord>,
    new: &LogKey,
    lost: bool,
) -> meshguard_api::AuditEntry {
    let reason = match (current, lost) {
        (Some(c), false) => format!(
            "checkpoint key {} replaced by {}; the handoff checkpoint carries both signatures",
            key_id(&c.vkey),
            key_id(&new.vkey())
        ),
        (Some(c), true) => format!(
            "checkpoint key {} reported lost; replaced by {}, which alone signs the handoff checkpoint",
            key_id(&c.vkey),
            key_id(&new.vkey())
        ),
        (None, _) => format!(
            "checkpoint key of a log without key records reported lost; replaced by {}",
            key_id(&new.vkey())
        ),
    };
    let mut meta = serde_json::Map::new();
    meta.insert("oldVkey".into(), current.map(|c| c.vkey.clone()).into());
    meta.insert("newVkey".into(), new.vkey().into());
    meta.insert("oldKeyLost".into(), lost.into());
    meshguard_api::AuditEntry {
        id: crate::ids::new_id("aud"),
        timestamp: crate::clock::now_rfc3339(),
        event: "key_rotation".to_owned(),
        action: "audit:rotate-key".to_owned(),
        reason: Some(reason),
        meta,
        ..Default::default()
    }
}

/// Once the log has recorded the new key: a staged key file is renamed over the old one (an
/// interrupted rename is finished at the next start). Returns what the operator does next.
fn put_new_key_in_place(
    staged: Option<&(PathBuf, PathBuf)>,
    new: &LogKey,
) -> anyhow::Result<String> {
    let Some((pending, path)) = staged else {
        return Ok(format!(
            "set AUDIT_KEY_URI to the URI given with --new-audit-key-uri ({}), then start the gateway",
            new.location()
        ));
    };
    meshguard_common::fsx::rename_durably(pending, path).with_context(|| {
        format!(
            "the log recorded the new key, but {} could not be moved to {}; the next start finishes it",
            pending.display(),
            path.display()
        )
    })?;
    Ok(format!(
        "start the gateway; back up the new key file {}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_rotation_is_finished_or_undone_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let store = crate::store::SqliteStore::open(&db).unwrap();
        let conn = super::super::store::open_conn(store.path()).unwrap();
        let path = dir.path().join("audit-log.key");
        let origin = "example.org/log";
        let first = open_signing_key(&conn, &KeySource::File(path.clone()), origin).unwrap();

        // The log recorded the new key; its file was not yet renamed into place.
        let next = LogKey::generate(origin);
        next.save(&pending_path(&path)).unwrap();
        conn.execute(
            "UPDATE audit_keys SET retired_size = 1 WHERE vkey = ?1",
            [first.vkey()],
        )
        .unwrap();
        insert(&conn, &next.vkey(), 1).unwrap();
        let got = open_signing_key(&conn, &KeySource::File(path.clone()), origin).unwrap();
        assert_eq!(got.vkey(), next.vkey());
        assert!(!pending_path(&path).exists());

        // A new key the log never recorded is dropped; the current key stays.
        LogKey::generate(origin).save(&pending_path(&path)).unwrap();
        let got = open_signing_key(&conn, &KeySource::File(path.clone()), origin).unwrap();
        assert_eq!(got.vkey(), next.vkey());
        assert!(!pending_path(&path).exists());
    }
}
