//! The embedded SQLite store: WAL mode, `synchronous=FULL`, versioned migrations, one process.
//!
//! One gateway owns a database file at a time: an exclusive lock on `<db>.lock` (released by the
//! kernel when the process dies, even by `kill -9`) refuses a second gateway before it touches the
//! file. Every acknowledged write has been fsynced by SQLite before the handler answers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use meshguard_api::ChangeRecord;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::dialect::Cells;
use super::tables::{self, Statement};
use super::{
    AgentRecord, ChangeDraft, ChangeFilter, ChannelRecord, PolicyRecord, SidecarRecord, Store,
    StoreError, Write,
};

/// Schema migrations, applied in order; the index + 1 is the schema version.
/// The schema version this build writes (the number of migrations it knows), shown in
/// `/admin/info` so an installer can tell whether two versions share a database schema.
pub(crate) const SCHEMA_VERSION: usize = MIGRATIONS.len();

const MIGRATIONS: &[&str] = &[
    // 1: control plane.
    "CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        trust_tier TEXT NOT NULL,
        tags TEXT NOT NULL,
        metadata TEXT NOT NULL,
        capabilities TEXT NOT NULL,
        description TEXT,
        token_ttl INTEGER,
        token_version INTEGER NOT NULL,
        revision INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        content TEXT NOT NULL,
        revision INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE alert_channels (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        revision INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        timestamp TEXT NOT NULL,
        kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        object_name TEXT,
        operation TEXT NOT NULL,
        fields TEXT NOT NULL,
        before TEXT,
        after TEXT,
        old_digest TEXT,
        new_digest TEXT,
        approver TEXT,
        change_ticket TEXT,
        trace_id TEXT
    );
    CREATE INDEX changes_object ON changes (kind, object_id);",
    // 2: the tamper-evident audit log.
    "CREATE TABLE audit_entries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        agent_id TEXT,
        action TEXT NOT NULL,
        decision TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_time ON audit_entries (timestamp);
    CREATE INDEX audit_agent ON audit_entries (agent_id, seq);
    CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        root TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
    // 3: alerts that could not be delivered.
    "CREATE TABLE alert_failures (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        failed_at TEXT NOT NULL
    );",
    // 4: each checkpoint keeps the Merkle frontier and chain heads at its size, so a restart
    // replays only the rows after the latest one.
    "ALTER TABLE audit_checkpoints ADD COLUMN frontier BLOB;
     ALTER TABLE audit_checkpoints ADD COLUMN heads TEXT;",
    // 5: the hash of every complete 256-leaf subtree of the audit log, so proofs read
    // O(n / 256) hashes instead of every entry. Missing tiles are computed from the entries.
    "CREATE TABLE audit_tiles (
        start INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );",
    // 6: the witness proof cache: site witnesses' cosignatures of signed checkpoints.
    "CREATE TABLE audit_cosignatures (
        size INTEGER NOT NULL,
        witness TEXT NOT NULL,
        line TEXT NOT NULL,
        cosigned_at INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        PRIMARY KEY (size, witness)
    );",
    // 7: guardian sidecars, each a log origin registered with its checkpoint key by its
    // agent's first heartbeat; later heartbeats must be signed by that key.
    "CREATE TABLE sidecars (
        origin TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        vkey TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        bundle_version INTEGER,
        policy_digest TEXT,
        held INTEGER NOT NULL DEFAULT 0
    );",
    // 8: each sidecar's Merkle frontier over the `held` entries, so a heartbeat extends it
    // instead of rehashing every entry the sidecar ever sent.
    "ALTER TABLE sidecars ADD COLUMN frontier BLOB;",
    // 9: the audit log's checkpoint keys over time: which key signs checkpoints of which
    // sizes, so a rotated log still verifies and a missing key file is refused at start.
    "CREATE TABLE audit_keys (
        vkey TEXT PRIMARY KEY,
        first_size INTEGER NOT NULL,
        retired_size INTEGER,
        added_at TEXT NOT NULL,
        retired_at TEXT
    );",
    // 10: when a change took effect, and the change it replaced on the same object (what a
    // rollback restores), filled in for the records already kept.
    "ALTER TABLE changes ADD COLUMN deployed_at TEXT;
    ALTER TABLE changes ADD COLUMN rollback_ref TEXT;
    UPDATE changes SET rollback_ref = (
        SELECT p.id FROM changes p
        WHERE p.kind = changes.kind AND p.object_id = changes.object_id AND p.seq < changes.seq
        ORDER BY p.seq DESC LIMIT 1
    );",
    // 11: every alert's outcome per channel (delivered, or not after its retries), so evidence
    // shows what was sent where and when, not only what failed.
    "CREATE TABLE alert_deliveries (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX alert_deliveries_at ON alert_deliveries (at);",
    // 12: the audit log lives in its own directory (C2SP tlog-tiles); `audit_entries` is its
    // index from now on. The row says the log was moved there (from this table's rows), so a
    // directory found empty later is a lost log, not a new one.
    "CREATE TABLE audit_layout (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 13: a create's Idempotency-Key, so a retried create answers the object it made.
    "ALTER TABLE changes ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX changes_idempotency_key ON changes (idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
    // 14: the audit index without the entries' bodies (read from the log directory, which is
    // what checkpoints sign), with the hashes as 32 bytes, the filters' fields as columns, and
    // the time bounds of each block of 256 entries instead of an index on every timestamp: an
    // index row costs about a third of the CPU and of the bytes it did (docs/benchmarks.md).
    // The gateway fills it from the log on its first start; `audit_entries` stays until the
    // log is known to hold every entry it indexed (`Writer::open` drops it then).
    "CREATE TABLE audit_index (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        source TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        agent_id TEXT,
        agent_name TEXT,
        action TEXT NOT NULL,
        decision TEXT NOT NULL,
        trace_id TEXT,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL
    );
    CREATE INDEX audit_index_id ON audit_index (id);
    CREATE INDEX audit_index_agent ON audit_index (agent_id, seq);
    CREATE TABLE audit_index_times (
        block INTEGER PRIMARY KEY,
        min_ts TEXT NOT NULL,
        max_ts TEXT NOT NULL
    );",
];

#[derive(Debug)]
pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Held for the life of the store; the lock goes with it.
    _lock: File,
    /// Seals alert-channel secrets at rest, once `seal_secrets_with` ran (the gateway always
    /// runs it; a store without it keeps them as given, for benchmarks and unit tests).
    secrets: Option<super::secrets::SecretBox>,
}

/// Why the store could not be opened; each says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(
        "another gateway (pid {pid}) is already using {path}; stop it, or give this one its own DB_PATH"
    )]
    Locked { path: String, pid: String },
    #[error(
        "cannot create the data directory {path}: {source}; create it or set DB_PATH elsewhere"
    )]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this gateway knows ({known}); run a newer gateway"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
}

/// The database holds agents, policies, change records and the audit index: readable by the
/// gateway's user only. The file is created 0600 before SQLite opens it (SQLite gives its WAL
/// and shared-memory files the database's mode), and an existing one, and its WAL and
/// shared-memory files, tightened to 0600 (earlier releases left them to the umask: 0644).
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<Self, OpenError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let lock = take_lock(path)?;
        private(path).map_err(|source| OpenError::Dir {
            path: shown.clone(),
            source,
        })?;
        let sqlite = |source| OpenError::Sqlite {
            path: shown.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrate(&mut conn, &shown)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            _lock: lock,
            secrets: None,
        })
    }

    /// Seals alert-channel secrets with the key at `key_path` (or in the token `uri` names)
    /// from now on, and seals those an earlier release stored in clear (in one transaction).
    /// Refuses a missing or different key when sealed secrets exist; with `uri`, secrets sealed
    /// under the key file are moved into the token in the same transaction.
    pub(crate) fn seal_secrets_with(&mut self, key: &super::KeySource) -> Result<(), String> {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let rows: Vec<(String, String)> = {
            let mut stmt = conn
                .prepare("SELECT id, body FROM alert_channels")
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| e.to_string())?;
            rows.collect::<Result<_, _>>().map_err(|e| e.to_string())?
        };
        let plan = super::channel_body::plan_sealing(rows, key)?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for (id, body) in &plan.updates {
            tx.execute(
                "UPDATE alert_channels SET body = ?2 WHERE id = ?1",
                params![id, body],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.secrets = Some(plan.report(&key.file));
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every row of `table` (oldest first), the `columns` named, for a copy into PostgreSQL.
    pub(crate) fn rows_of(
        &self,
        table: &str,
        columns: &[(String, bool)],
    ) -> Result<Vec<Vec<rusqlite::types::Value>>, String> {
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY rowid", names.join(", "));
        self.with(|c| {
            let mut st = c.prepare(&sql)?;
            let rows = st.query_map([], |r| {
                (0..names.len())
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?;
            rows.collect()
        })
        .map_err(|e| format!("reading {table} from {}: {e}", self.path.display()))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut conn).map_err(backend)
    }

    /// The first row `st` reads, mapped by `map`.
    fn one<T>(
        &self,
        st: &Statement,
        map: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&st.sql).map_err(backend)?;
        let mut rows = stmt.query(params_from_iter(&st.params)).map_err(backend)?;
        rows.next().map_err(backend)?.map(|r| map(r)).transpose()
    }

    /// Every row `st` reads, mapped by `map`.
    fn all<T>(
        &self,
        st: &Statement,
        map: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare_cached(&st.sql).map_err(backend)?;
        let mut rows = stmt.query(params_from_iter(&st.params)).map_err(backend)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(backend)? {
            out.push(map(r)?);
        }
        Ok(out)
    }

    /// Runs one statement outside the change log.
    fn run(&self, st: &Statement) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(&st.sql, params_from_iter(&st.params))
            .map(drop)
            .map_err(backend)
    }

    /// Runs `write` and inserts `change` in one transaction.
    fn write_with_change(
        &self,
        change: &ChangeDraft,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<usize, StoreError>,
        expect_rows: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // IMMEDIATE: the write lock from the start. A deferred transaction that reads first (the
        // capped agent insert counts) and writes after fails at once with "database is locked"
        // when the audit indexer, on its own connection to this file, committed in between
        // (SQLite cannot move a WAL read snapshot forward; the busy timeout does not apply).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let rows = write(&tx)?;
        if expect_rows && rows == 0 {
            return Err(StoreError::Stale);
        }
        insert_change(&tx, change).map_err(backend)?;
        tx.commit().map_err(backend)
    }
}

fn take_lock(db: &Path) -> Result<File, OpenError> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let io = |source| OpenError::Io {
        path: lock_path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(OpenError::Locked {
                path: db.display().to_string(),
                pid: if pid.trim().is_empty() {
                    "unknown".into()
                } else {
                    pid.trim().to_owned()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

fn migrate(conn: &mut Connection, shown: &str) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: shown.to_owned(),
        source,
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .map_err(sqlite)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(OpenError::TooNew {
            path: shown.to_owned(),
            found: current,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(sqlite)?;
        tx.execute_batch(sql).map_err(sqlite)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![index as i64 + 1, crate::clock::now_rfc3339()],
        )
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
    }
    Ok(())
}

/// Runs one shared statement in `tx`: the rows it changed.
fn exec(tx: &rusqlite::Transaction<'_>, st: &Statement) -> rusqlite::Result<usize> {
    tx.execute(&st.sql, params_from_iter(&st.params))
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn insert_change(tx: &rusqlite::Transaction<'_>, c: &ChangeDraft) -> rusqlite::Result<()> {
    // The change this one replaces on the same object, read in the write's own transaction.
    let previous = tables::previous_change(c);
    let rollback_ref: Option<String> = tx
        .query_row(&previous.sql, params_from_iter(&previous.params), |r| {
            r.get(0)
        })
        .optional()?;
    exec(tx, &tables::insert_change(c, rollback_ref))?;
    Ok(())
}

fn unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

impl Store for SqliteStore {
    fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.one(&tables::get_agent(id), tables::agent_from_row)
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.all(&tables::list_agents(), tables::agent_from_row)
    }

    fn save_agent(
        &self,
        a: &AgentRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let st = tables::save_agent(a, write)?;
        self.write_with_change(
            change,
            |tx| {
                if let Write::InsertCapped(max) = write {
                    let count = tables::count_active_agents();
                    let active: i64 = tx
                        .query_row(&count.sql, params_from_iter(&count.params), |r| r.get(0))
                        .map_err(backend)?;
                    if active as u64 >= max {
                        return Err(StoreError::AgentLimit(active as u64));
                    }
                }
                exec(tx, &st).map_err(backend)
            },
            true,
        )
    }

    fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.one(&tables::get_policy(id), tables::policy_from_row)
    }

    fn get_policy_by_name(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.one(&tables::get_policy_by_name(name), tables::policy_from_row)
    }

    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.all(&tables::list_policies(), tables::policy_from_row)
    }

    fn save_policy(
        &self,
        p: &PolicyRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let st = tables::save_policy(p, write)?;
        let conflict = |e: rusqlite::Error| {
            if unique_violation(&e) {
                tables::policy_name_taken(p)
            } else {
                backend(e)
            }
        };
        self.write_with_change(change, |tx| exec(tx, &st).map_err(conflict), true)
    }

    fn get_channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.one(&tables::get_channel(id), |r| {
            tables::channel_from_row(r, self.secrets.as_ref())
        })
    }

    fn list_channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.all(&tables::list_channels(), |r| {
            tables::channel_from_row(r, self.secrets.as_ref())
        })
    }

    fn save_channel(
        &self,
        ch: &ChannelRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let body = super::channel_body::encode(ch, self.secrets.as_ref())?;
        let st = tables::save_channel(ch, body, write)?;
        self.write_with_change(change, |tx| exec(tx, &st).map_err(backend), true)
    }

    fn list_changes(&self, f: &ChangeFilter) -> Result<Vec<ChangeRecord>, StoreError> {
        self.all(&tables::list_changes(f), tables::change_from_row)
    }

    fn created_with_key(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        self.one(&tables::created_with_key(key), tables::kind_and_object)
    }

    fn mark_deployed(&self, change_id: &str, at: &str) -> Result<(), StoreError> {
        self.run(&tables::mark_deployed(change_id, at))
    }

    fn save_undelivered(&self, alert: &Value) -> Result<(), StoreError> {
        self.run(&tables::save_undelivered(alert))
    }

    fn list_undelivered(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        self.all(&tables::list_undelivered(limit), tables::body_from_row)
    }

    fn record_delivery(&self, delivery: &Value) -> Result<(), StoreError> {
        self.run(&tables::record_delivery(delivery))
    }

    fn list_deliveries(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        self.all(
            &tables::list_deliveries(from, to, limit),
            tables::body_from_row,
        )
    }

    fn last_change_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .one(&tables::last_change_seq(), tables::first_int)?
            .unwrap_or(0))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn get_sidecar(&self, origin: &str) -> Result<Option<SidecarRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT origin, agent_id, vkey, first_seen, last_seen, bundle_version, held, policy_digest, frontier
                 FROM sidecars WHERE origin = ?1",
                [origin],
                sidecar_row,
            )
            .optional()
        })
    }

    fn list_sidecars(&self) -> Result<Vec<SidecarRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT origin, agent_id, vkey, first_seen, last_seen, bundle_version, held, policy_digest, frontier
                 FROM sidecars ORDER BY agent_id, origin",
            )?;
            stmt.query_map([], sidecar_row)?.collect()
        })
    }

    fn save_sidecar(&self, rec: &SidecarRecord) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sidecars (origin, agent_id, vkey, first_seen, last_seen, bundle_version, held, policy_digest, frontier)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (origin) DO UPDATE SET
                   last_seen = excluded.last_seen, bundle_version = excluded.bundle_version,
                   held = excluded.held, policy_digest = excluded.policy_digest,
                   frontier = excluded.frontier
                 WHERE sidecars.agent_id = excluded.agent_id AND sidecars.vkey = excluded.vkey",
                params![
                    rec.origin,
                    rec.agent_id,
                    rec.vkey,
                    rec.first_seen,
                    rec.last_seen,
                    rec.bundle_version.map(|v| v as i64),
                    rec.held as i64,
                    rec.policy_digest,
                    rec.frontier
                ],
            )
            .map(|_| ())
        })
    }
}

fn sidecar_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SidecarRecord> {
    Ok(SidecarRecord {
        origin: r.get(0)?,
        agent_id: r.get(1)?,
        vkey: r.get(2)?,
        first_seen: r.get(3)?,
        last_seen: r.get(4)?,
        bundle_version: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        held: r.get::<_, i64>(6)? as u64,
        policy_digest: r.get(7)?,
        frontier: r.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_store_on_the_same_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let _first = SqliteStore::open(&db).unwrap();
        let err = SqliteStore::open(&db).unwrap_err().to_string();
        assert!(err.contains("already using"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[test]
    fn reopening_applies_no_migration_twice() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        drop(SqliteStore::open(&db).unwrap());
        let store = SqliteStore::open(&db).unwrap();
        let versions: i64 = store
            .with(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(versions, MIGRATIONS.len() as i64);
    }
}
