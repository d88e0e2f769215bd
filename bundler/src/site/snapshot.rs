//! The site's database across a schema change. An upgrade may migrate the gateway's SQLite
//! database to a schema the version before it cannot open; so before the new version first
//! starts on the site's volume, the database files of the stopped version are copied into the
//! state directory (`snapshots/<version>/`, with their digests). A rollback to a version with a
//! lower schema puts that copy back and sets the migrated files aside (never deletes them).
//!
//! The audit log is not part of this: its directory on the volume is append-only and readable
//! by every version, so the entries made after the snapshot stay, and the older gateway indexes
//! them again at start. What the copy cannot carry back are control-plane changes made after it
//! (agents, policies, channels): the caller lists them in the transcript.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fsx;

/// The gateway's database and its write-ahead log, as the chart names them on the volume.
const DB_FILES: [&str; 3] = ["meshguard.db", "meshguard.db-wal", "meshguard.db-shm"];
const RECORD: &str = "snapshot.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The version whose database this is.
    pub version: String,
    /// Its schema version (`/admin/info` `schemaVersion`), when it said.
    pub schema_version: Option<u64>,
    pub taken_at: String,
    pub files: Vec<SnapFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

fn dir_of(state_dir: &Path, version: &str) -> PathBuf {
    state_dir.join("snapshots").join(version)
}

/// Copies the database files of the stopped gateway (in `volume`) into the state directory
/// as the snapshot of `version`; the record is written last, so a snapshot with a record is
/// whole. An earlier snapshot of the same version is replaced.
pub fn take(
    volume: &Path,
    state_dir: &Path,
    version: &str,
    schema_version: Option<u64>,
) -> Result<Snapshot> {
    let dir = dir_of(state_dir, version);
    let _ = std::fs::remove_file(dir.join(RECORD));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    for name in DB_FILES {
        let from = volume.join(name);
        let _ = std::fs::remove_file(dir.join(name));
        if !from.exists() {
            continue;
        }
        let (sha256, size) = copy_durably(&from, &dir.join(name))?;
        files.push(SnapFile {
            name: name.to_owned(),
            sha256,
            size,
        });
    }
    if files.iter().all(|f| f.name != DB_FILES[0]) {
        bail!(
            "the site's volume ({}) holds no {}: nothing to snapshot before the upgrade; is the chart's DB_PATH changed?",
            volume.display(),
            DB_FILES[0]
        );
    }
    let snap = Snapshot {
        version: version.to_owned(),
        schema_version,
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        files,
    };
    fsx::write_atomic(&dir.join(RECORD), &serde_json::to_vec_pretty(&snap)?)?;
    Ok(snap)
}

/// The snapshot of `version`, its files checked against their digests; None when there is
/// none.
pub fn find(state_dir: &Path, version: &str) -> Result<Option<Snapshot>> {
    let dir = dir_of(state_dir, version);
    let Ok(bytes) = std::fs::read(dir.join(RECORD)) else {
        return Ok(None);
    };
    let snap: Snapshot = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is damaged", dir.join(RECORD).display()))?;
    for f in &snap.files {
        let (got, _) = fsx::sha256_file(&dir.join(&f.name))
            .with_context(|| format!("the snapshot of {version} lacks {}", f.name))?;
        if got != f.sha256 {
            bail!(
                "the snapshot of {version}'s {} does not match its recorded digest: it was altered; restore the state directory from backup",
                f.name
            );
        }
    }
    Ok(Some(snap))
}

/// Puts `snap`'s database files on the volume; the files there are moved to a directory of
/// their own under `snapshots/set-aside/` first (returned), with their owner kept for the
/// copies so the gateway's user can open them.
pub fn restore(volume: &Path, state_dir: &Path, snap: &Snapshot, label: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let aside = state_dir.join("snapshots").join("set-aside").join(label);
    std::fs::create_dir_all(&aside)
        .with_context(|| format!("cannot create {}", aside.display()))?;
    let owner = std::fs::metadata(volume.join(DB_FILES[0]))
        .map(|m| (m.uid(), m.gid()))
        .ok();
    for name in DB_FILES {
        let on_volume = volume.join(name);
        if on_volume.exists() {
            copy_durably(&on_volume, &aside.join(name))?;
            std::fs::remove_file(&on_volume)
                .with_context(|| format!("cannot remove {}", on_volume.display()))?;
        }
    }
    let from = dir_of(state_dir, &snap.version);
    for f in &snap.files {
        let to = volume.join(&f.name);
        copy_durably(&from.join(&f.name), &to)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to the gateway's user", to.display()))?;
        }
    }
    Ok(aside)
}

/// Undoes [`restore`]: the set-aside files go back on the volume.
pub fn put_back(volume: &Path, aside: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let owner = std::fs::metadata(volume.join(DB_FILES[0]))
        .map(|m| (m.uid(), m.gid()))
        .ok();
    for name in DB_FILES {
        let _ = std::fs::remove_file(volume.join(name));
        let kept = aside.join(name);
        if kept.exists() {
            let to = volume.join(name);
            copy_durably(&kept, &to)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
            }
        }
    }
    Ok(())
}

/// Copies `from` to `to` without holding it in memory (a site's database holds the audit
/// index and can be large): written beside, fsynced, renamed in. Its SHA-256 and size.
fn copy_durably(from: &Path, to: &Path) -> Result<(String, u64)> {
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let copied = fsx::copy_hashed(from, &partial)?;
    meshguard_common::fsx::rename_durably(&partial, to)
        .with_context(|| format!("cannot put {} in place", to.display()))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_goes_back_and_the_files_it_replaces_are_set_aside() {
        let volume = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(volume.path().join("meshguard.db"), b"schema 12").unwrap();
        std::fs::write(volume.path().join("meshguard.db-wal"), b"wal 12").unwrap();
        let snap = take(volume.path(), state.path(), "0.1.0", Some(12)).unwrap();
        assert_eq!(snap.files.len(), 2);
        // The upgrade migrates; its WAL is of the new schema.
        std::fs::write(volume.path().join("meshguard.db"), b"schema 13").unwrap();
        std::fs::write(volume.path().join("meshguard.db-wal"), b"wal 13").unwrap();
        std::fs::write(volume.path().join("meshguard.db-shm"), b"shm 13").unwrap();
        let found = find(state.path(), "0.1.0").unwrap().unwrap();
        let aside = restore(volume.path(), state.path(), &found, "from-0.1.1").unwrap();
        let read = |p: &Path| std::fs::read(p).ok();
        assert_eq!(
            read(&volume.path().join("meshguard.db")),
            Some(b"schema 12".to_vec())
        );
        assert_eq!(
            read(&volume.path().join("meshguard.db-wal")),
            Some(b"wal 12".to_vec())
        );
        assert_eq!(
            read(&volume.path().join("meshguard.db-shm")),
            None,
            "no stale shm"
        );
        assert_eq!(
            read(&aside.join("meshguard.db")),
            Some(b"schema 13".to_vec())
        );
        assert_eq!(
            read(&aside.join("meshguard.db-shm")),
            Some(b"shm 13".to_vec())
        );
        put_back(volume.path(), &aside).unwrap();
        assert_eq!(
            read(&volume.path().join("meshguard.db")),
            Some(b"schema 13".to_vec())
        );
        // An altered snapshot is refused, naming the file.
        std::fs::write(state.path().join("snapshots/0.1.0/meshguard.db"), b"x").unwrap();
        let err = find(state.path(), "0.1.0").unwrap_err().to_string();
        assert!(err.contains("meshguard.db does not match"), "{err}");
        assert!(find(state.path(), "9.9.9").unwrap().is_none());
    }
}
