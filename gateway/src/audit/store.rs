//! SQLite side of the audit log: the writer's connection (append, ingest, checkpoint) and a
//! reader connection for queries, stats, export and verification.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use base64::Engine;
use meshguard_api::{AuditEntry, AuditExportLine, AuditRecord};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::merkle::{self, Frontier};
use super::note::{self, LogKey};
use super::tiles::{self, TileReader, TileWriter};
use super::{GENESIS, IngestReport, canonical, chain_hash, chain_link};

/// A connection to the log's database (WAL, synchronous=FULL).
pub(crate) fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    open(path)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Statement journals and temporary tables in memory, not in files under /var/tmp: the
    // index's `INSERT OR REPLACE` of earlier releases wrote one per row (on tmpfs 12.2 µs an
    // entry with the file, 6.9 without, docs/benchmarks.md), and the gateway needs no writable
    // temporary directory for SQLite.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// The chain heads kept with the latest checkpoint at or below `size` whose saved frontier
/// gives the root the log key signed and whose root the log directory still gives: a restart
/// replays only the entries after it. Anything else is reported and the whole log replayed.
fn anchor(
    conn: &Connection,
    tiles: &TileReader,
    vkey: &str,
    size: u64,
) -> rusqlite::Result<Option<(u64, HashMap<String, String>)>> {
    let latest: Option<(i64, Vec<u8>, String, String)> = conn
        .query_row(
            "SELECT size, frontier, heads, note FROM audit_checkpoints
             WHERE frontier IS NOT NULL AND heads IS NOT NULL AND size <= ?1
             ORDER BY size DESC LIMIT 1",
            [size as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((at, bytes, heads, note_text)) = latest else {
        return Ok(None);
    };
    let at = at as u64;
    let distrust = |why: &str| {
        tracing::warn!(
            size = at,
            why,
            "the audit checkpoint's saved chain heads are not used; replaying the whole log"
        );
        Ok(None)
    };
    let Some(frontier) = Frontier::from_bytes(at, &bytes) else {
        return distrust("its frontier does not fit its size");
    };
    match note::verify_checkpoint(vkey, &note_text) {
        Ok(cp) if cp.size == at && cp.root == frontier.root() => {}
        Ok(_) => return distrust("its frontier does not give the signed root"),
        Err(e) => return distrust(&format!("its note does not verify: {e}")),
    }
    match tiles.root(at) {
        Ok(root) if root == frontier.root() => {}
        Ok(_) => {
            tracing::error!(
                size = at,
                "the audit log directory no longer gives the root signed at this size: entries were altered; GET /admin/audit/verify names the first"
            );
            return Ok(None);
        }
        Err(e) => return distrust(&format!("its root cannot be read from the log: {e}")),
    }
    let Ok(heads) = serde_json::from_str::<HashMap<String, String>>(&heads) else {
        return distrust("its chain heads are not a JSON map");
    };
    Ok(Some((at, heads)))
}

/// An export line's parts: the index row's place and hashes, and the entry as the log holds it.
struct ExportParts {
    seq: u64,
    source: String,
    prev_hash: merkle::Hash,
    hash: merkle::Hash,
    body: String,
}

impl ExportParts {
    /// Appends the export line, the entry as the log holds it when that is JSON on one line.
    fn write_line(self, out: &mut Vec<u8>) {
        let json = |v: &str| serde_json::to_string(v).expect("a string serializes");
        out.extend_from_slice(
            format!(
                "{{\"seq\":{},\"source\":{},\"prevHash\":\"{}\",\"hash\":\"{}\",\"entry\":",
                self.seq,
                json(&self.source),
                hex::encode(self.prev_hash),
                hex::encode(self.hash)
            )
            .as_bytes(),
        );
        let raw = !self.body.contains('\n')
            && serde_json::from_str::<serde::de::IgnoredAny>(&self.body).is_ok();
        if raw {
            out.extend_from_slice(self.body.as_bytes());
        } else {
            // Not JSON, or a line break that would split the line: as `export` gives it.
            let entry = serde_json::from_str(&self.body).unwrap_or(Value::String(self.body));
            serde_json::to_writer(&mut *out, &entry).expect("a value serializes");
        }
        out.extend_from_slice(b"}\n");
    }
}

/// A row of the index, from one entry of the log: the fields lists filter on and the entry's
/// chain hashes. The entry itself is read from the log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexRow {
    seq: u64,
    id: String,
    source: Arc<str>,
    timestamp: String,
    agent_id: Option<String>,
    agent_name: Option<String>,
    action: String,
    decision: String,
    trace_id: Option<String>,
    prev_hash: merkle::Hash,
    hash: merkle::Hash,
}

/// The 32 bytes of a chain hash held as hex (heads and checked export lines always are).
fn hash_bytes(hex_hash: &str) -> merkle::Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out).expect("chain hashes are 32-byte hex");
    out
}

/// The source of a row not yet placed in the log (one shared value: no allocation per entry).
static UNPLACED: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));

/// Entries per block of the time table: one entry bundle of the log.
const TIME_BLOCK: u64 = 256;

impl IndexRow {
    /// The id indexed for an entry that has none (the log was altered; `verify` names it).
    fn missing_id(seq: u64) -> String {
        format!("missing-id-{seq}")
    }

    /// The row of an entry of this gateway's own, before the writer places it in the log (its
    /// seq, source and hashes): the entry's fields are moved, not copied.
    pub(crate) fn unplaced(entry: AuditEntry) -> Self {
        Self {
            seq: 0,
            id: entry.id,
            source: Arc::clone(&UNPLACED),
            timestamp: entry.timestamp,
            agent_id: entry.agent_id,
            agent_name: entry.agent_name,
            action: entry.action,
            decision: entry.decision,
            trace_id: Some(entry.trace_id),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    /// The row of an entry read back from the log (its fields from the body).
    fn from_body(seq: u64, source: &str, body: &str, prev_hash: &str, hash: &str) -> Self {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        Self::from_value(seq, source, &v, prev_hash, hash)
    }

    /// The row of an entry already parsed (an ingested export line's).
    fn from_value(seq: u64, source: &str, v: &Value, prev_hash: &str, hash: &str) -> Self {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            seq,
            id: text("id").unwrap_or_else(|| Self::missing_id(seq)),
            source: Arc::from(source),
            timestamp: text("timestamp").unwrap_or_default(),
            agent_id: text("agentId"),
            agent_name: text("agentName"),
            action: text("action").unwrap_or_default(),
            decision: text("decision").unwrap_or_default(),
            trace_id: text("traceId"),
            prev_hash: hash_bytes(prev_hash),
            hash: hash_bytes(hash),
        }
    }

    /// The columns in which `self` and `other` differ.
    fn differences(&self, other: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, same: bool| {
            if !same {
                out.push(name);
            }
        };
        check("id", self.id == other.id);
        check("source", self.source == other.source);
        check("timestamp", self.timestamp == other.timestamp);
        check("agent_id", self.agent_id == other.agent_id);
        check("agent_name", self.agent_name == other.agent_name);
        check("action", self.action == other.action);
        check("decision", self.decision == other.decision);
        check("trace_id", self.trace_id == other.trace_id);
        check("prev_hash", self.prev_hash == other.prev_hash);
        check("hash", self.hash == other.hash);
        out
    }

    /// The block of the time table this entry is in.
    fn block(&self) -> u64 {
        (self.seq - 1) / TIME_BLOCK
    }
}

/// Inserts `rows` into the index in the current transaction, and widens their blocks' time
/// bounds. A plain `INSERT`: `INSERT OR REPLACE` needs a statement journal for every row and
/// could only hide an entry (an id the log holds twice is two rows, as in the log).
fn index_rows(conn: &Connection, rows: &[IndexRow]) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_index (seq, id, source, timestamp, agent_id, agent_name, action, decision, trace_id, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for r in rows {
        insert.execute(params![
            r.seq as i64,
            r.id,
            r.source,
            r.timestamp,
            r.agent_id,
            r.agent_name,
            r.action,
            r.decision,
            r.trace_id,
            r.prev_hash,
            r.hash
        ])?;
    }
    let mut widen = conn.prepare_cached(
        "INSERT INTO audit_index_times (block, min_ts, max_ts) VALUES (?1, ?2, ?3)
         ON CONFLICT (block) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), max_ts = max(max_ts, excluded.max_ts)",
    )?;
    for group in rows.chunk_by(|a, b| a.block() == b.block()) {
        let stamps = group.iter().map(|r| r.timestamp.as_str());
        let (lo, hi) = (stamps.clone().min(), stamps.max());
        widen.execute(params![group[0].block() as i64, lo, hi])?;
    }
    Ok(())
}

/// The seqs `(lo, hi)` that can hold an entry timestamped within `from..=to`, from the time
/// table: every entry before the first block whose latest timestamp reaches `from` is earlier,
/// every entry after the last block whose earliest timestamp is at most `to` is later. Entries
/// need not be in time order (ingested ones keep their own timestamps): the bounds only narrow
/// the scan, and the caller still tests each row's timestamp.
fn time_span(c: &Connection, from: Option<&str>, to: Option<&str>) -> rusqlite::Result<(i64, i64)> {
    let block = |sql: &str, at: &str| -> rusqlite::Result<Option<i64>> {
        c.prepare_cached(sql)?.query_row([at], |r| r.get(0))
    };
    let lo = match from {
        None => 1,
        Some(f) => match block(
            "SELECT MIN(block) FROM audit_index_times WHERE max_ts >= ?1",
            f,
        )? {
            Some(b) => b * TIME_BLOCK as i64 + 1,
            None => return Ok((1, 0)),
        },
    };
    let hi = match to {
        None => i64::MAX,
        Some(t) => match block(
            "SELECT MAX(block) FROM audit_index_times WHERE min_ts <= ?1",
            t,
        )? {
            Some(b) => (b + 1) * TIME_BLOCK as i64,
            None => return Ok((1, 0)),
        },
    };
    Ok((lo, hi))
}

/// Reads entries `from..=to` of the log with their chains, from `heads` as they were before
/// `from`, calling `f` with each row (and updating `heads`).
fn replay(
    tiles: &TileReader,
    origin: &str,
    from: u64,
    to: u64,
    heads: &mut HashMap<String, String>,
    mut f: impl FnMut(IndexRow, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runs = tiles::read_sources(tiles.dir(), to)?;
    tiles.for_each(from, to, |seq, entry| {
        let source = tiles::source_of(&runs, seq, origin);
        let body = std::str::from_utf8(entry)
            .with_context(|| format!("audit log entry {seq} is not UTF-8"))?;
        let prev = heads.get(source).map_or(GENESIS, String::as_str);
        let hash = chain_hash(prev, body).expect("heads are 32-byte hex");
        let row = IndexRow::from_body(seq, source, body, prev, &hash);
        heads.insert(source.to_owned(), hash);
        f(row, body)
    })
}

/// Entries of this gateway's chain appended since the last flush.
struct Open {
    /// The chain head after the last of them.
    head: merkle::Hash,
    leaves: Vec<merkle::Hash>,
    rows: Vec<IndexRow>,
}

/// Why an ingest failed: the export was refused (nothing written), or the log's disk failed
/// while its entries were written or synced (the log must stop, as after a failed group).
#[derive(Debug)]
pub(crate) enum IngestError {
    Refused(String),
    Disk(String),
}

/// A group written to the staging bundles, for its leader: the files to sync and the index rows
/// to hand on once they are durable.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub(crate) segments: Vec<tiles::Segment>,
    pub(crate) rows: Vec<IndexRow>,
    pub(crate) last_seq: u64,
}

/// Makes `segments` durable: each staging file synced once, full bundles sealed, the staging
/// directory synced when a new bundle was started. Returns the position now durable.
///
/// Bundles grow by appending, so each `fdatasync` also commits the file's new size. Bundles
/// created as zeros to write over sync faster, and were dropped: such a write can reach the
/// disk although its sync fails, and the failing-disk test saw a refused entry come back
/// (`docs/benchmarks.md`).
pub(crate) fn sync_segments(
    dir: &Path,
    segments: &[tiles::Segment],
) -> std::io::Result<(u64, u64)> {
    let mut at = (0, 0);
    for (i, s) in segments.iter().enumerate() {
        // A segment's file reappears only as the same bundle's later segment.
        if segments[i + 1..].iter().all(|t| t.bundle != s.bundle) {
            s.file.sync_data()?;
        }
        if s.sealed {
            tiles::seal(dir, s.bundle)?;
            at = (s.bundle + 1, 0);
        } else {
            at = (s.bundle, s.len);
        }
    }
    if segments.len() > 1 || segments.first().is_some_and(|s| s.sealed) {
        tiles::sync_staging(dir)?;
    }
    Ok(at)
}

/// The writer's state: the log directory, the Merkle frontier and the head of every chain, and
/// a connection for the checkpoint and key records.
pub(crate) struct Writer {
    /// The log directory's lock, held for the writer's life.
    _lock: std::fs::File,
    conn: Connection,
    tiles: TileWriter,
    open: Option<Open>,
    origin: String,
    /// The origin again, as the source every own entry's index row shares.
    source: Arc<str>,
    frontier: Frontier,
    heads: HashMap<String, String>,
    signed_size: u64,
    /// The highest seq known to be on disk; readers show nothing beyond it.
    durable: Arc<AtomicU64>,
    /// The highest seq in the index.
    indexed: Arc<AtomicU64>,
}

/// Takes `<dir>/lock` (an exclusive `flock`, released with the process): two gateways writing
/// one log directory would interleave their bundles.
fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the audit log directory {}", dir.display()))?;
    // The log is read by others through the gateway's tile routes, not from the disk: the
    // directory is the gateway's user's only (earlier releases left it to the umask).
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(
            || {
                format!(
                    "cannot make the audit log directory {} private",
                    dir.display()
                )
            },
        )?;
    }
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another gateway is writing the audit log in {}; give each gateway its own AUDIT_LOG_DIR (and DB_PATH)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Waits, up to `within`, until `indexed` reaches what `durable` is now; returns how many
/// entries it still lacks (0 once caught up).
fn wait_indexed(durable: &AtomicU64, indexed: &AtomicU64, within: std::time::Duration) -> u64 {
    let want = durable.load(Ordering::SeqCst);
    let deadline = std::time::Instant::now() + within;
    loop {
        let have = indexed.load(Ordering::SeqCst);
        if have >= want || std::time::Instant::now() >= deadline {
            return want.saturating_sub(have);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The highest seq in the index.
fn last_indexed(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_index", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|s| s.max(0) as u64)
}

/// The highest seq in the index of releases before schema 14 (`audit_entries`, with the
/// entries' bodies), if that table is still there; 0 if it is empty.
fn last_indexed_before_14(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let kept: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_entries')",
        [],
        |r| r.get(0),
    )?;
    if !kept {
        return Ok(None);
    }
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_entries", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|s| Some(s.max(0) as u64))
}

/// Drops the index of releases before schema 14, once the log directory is known to hold
/// every entry it indexed; the indexer fills the new index from the log behind the gateway.
///
/// How many entries it held is kept (`audit_layout`, `indexed_before_14`) in the same
/// transaction: until the new index is filled, that count is what guards a start against a log
/// directory removed or cut short.
fn drop_index_before_14(conn: &Connection, held: u64) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    let tx = conn.unchecked_transaction()?;
    if held > 0 {
        tx.execute(
            "INSERT OR REPLACE INTO audit_layout (key, value) VALUES ('indexed_before_14', ?1)",
            [held.to_string()],
        )?;
    }
    tx.execute_batch("DROP TABLE audit_entries")?;
    tx.commit()?;
    if held > 0 {
        tracing::info!(
            entries = held,
            seconds = started.elapsed().as_secs_f64(),
            "the audit index of earlier releases (with every entry's body) was dropped; the new one is filled from the log directory behind the running gateway"
        );
    }
    Ok(())
}

/// How many entries the index of releases before schema 14 held when it was dropped (0 if it
/// never held any).
fn held_before_14(conn: &Connection) -> rusqlite::Result<u64> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM audit_layout WHERE key = 'indexed_before_14'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Moves a log kept as SQLite rows (before the tiles layout) into the log directory, byte for
/// byte, so every root stays what its checkpoints signed; the rows stay as the index.
fn migrate(conn: &Connection, tiles: &mut TileWriter, origin: &str) -> anyhow::Result<()> {
    let mut stmt = conn.prepare("SELECT seq, source, body FROM audit_entries ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut run: Option<(u64, u64, String)> = None;
    let mut runs = Vec::new();
    let mut expected = 1u64;
    while let Some(r) = rows.next()? {
        let (seq, source, body): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let seq = seq as u64;
        if seq != expected {
            bail!(
                "the audit log cannot move to {}: row {expected} is missing (the rows jump to {seq}); GET /admin/audit/verify on the previous release names it",
                tiles.dir().display()
            );
        }
        expected += 1;
        if body.len() > u16::MAX as usize {
            bail!(
                "audit entry {seq} is {} bytes, over the 65,535 an entry bundle holds",
                body.len()
            );
        }
        if source != origin {
            match &mut run {
                Some((_, count, s)) if *s == source => *count += 1,
                _ => {
                    runs.extend(run.take());
                    run = Some((seq, 1, source));
                }
            }
        } else {
            runs.extend(run.take());
        }
        tiles.append(body.as_bytes(), merkle::leaf_hash(body.as_bytes()));
        if tiles.size().is_multiple_of(65_536) {
            let flushed = tiles.flush()?;
            sync_segments(tiles.dir(), &flushed)?;
        }
    }
    runs.extend(run.take());
    for (first, count, source) in runs {
        tiles.add_run(first, count, &source)?;
    }
    let flushed = tiles.flush()?;
    sync_segments(tiles.dir(), &flushed)?;
    Ok(())
}

impl Writer {
    /// Opens the log directory and rebuilds the frontier (from its tiles) and the chain heads
    /// (from the latest trusted checkpoint, replaying only the entries after it). A log kept
    /// as SQLite rows by an earlier release is moved into the directory first.
    pub(crate) fn open(
        path: &Path,
        log_dir: &Path,
        origin: &str,
        vkey: &str,
    ) -> anyhow::Result<Self> {
        let conn = open(path)?;
        let lock = lock_dir(log_dir)?;
        let mut tiles = TileWriter::open(log_dir)?;
        let before_14 = last_indexed_before_14(&conn)?;
        let indexed = last_indexed(&conn)?;
        // What the index held, and the log with it: the index of an earlier release counts,
        // and so does its count once dropped (the new index may not be filled yet).
        let held = indexed
            .max(before_14.unwrap_or(0))
            .max(held_before_14(&conn)?);
        let moved: Option<String> = conn
            .query_row(
                "SELECT value FROM audit_layout WHERE key = 'tiles'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match moved {
            None if tiles.size() == 0 && held > 0 => {
                tracing::info!(entries = held, dir = %log_dir.display(), "moving the audit log into the tiles layout");
                migrate(&conn, &mut tiles, origin)?;
                // The latest checkpoint, when it covers the whole log, is published with it.
                let latest: Option<(i64, String)> = conn
                    .query_row(
                        "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((size, note)) = latest
                    && size as u64 == tiles.size()
                {
                    tiles.publish(&note)?;
                }
            }
            // A move into the tiles layout that stopped part way (it records the layout only
            // once every row is in the directory): the rows are all still in the database.
            None if tiles.size() < held => bail!(
                "the audit log's move into {} stopped part way: the directory holds {} of the {held} entries the database holds. Move that directory aside (or remove it) and start again: the move starts over from the database, which still holds every entry",
                log_dir.display(),
                tiles.size()
            ),
            None => {}
            Some(_) if tiles.size() < held => bail!(
                "the audit log directory {} holds {} entries, but the index (and the log before it) held {held}: the directory was removed, replaced or cut short. Restore it from backup (AUDIT_LOG_DIR); the gateway does not start on a log that lost entries",
                log_dir.display(),
                tiles.size()
            ),
            Some(_) => {}
        }
        if moved.is_none() {
            conn.execute(
                "INSERT OR REPLACE INTO audit_layout (key, value) VALUES ('tiles', ?1)",
                [log_dir.display().to_string()],
            )?;
        }
        // Only here: every check above has passed, so the directory holds every entry the old
        // index held.
        if let Some(old) = before_14 {
            drop_index_before_14(&conn, old)?;
        }
        let size = tiles.size();
        let frontier = tiles.frontier();
        let reader = TileReader::new(log_dir);
        let (from, mut heads) = anchor(&conn, &reader, vkey, size)?.unwrap_or_default();
        replay(&reader, origin, from + 1, size, &mut heads, |_, _| Ok(()))?;
        let signed_size: u64 = conn
            .query_row(
                "SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints",
                [],
                |r| r.get::<_, i64>(0),
            )?
            .try_into()
            .unwrap_or(0);
        Ok(Self {
            _lock: lock,
            conn,
            tiles,
            open: None,
            origin: origin.to_owned(),
            source: Arc::from(origin),
            frontier,
            heads,
            signed_size,
            durable: Arc::new(AtomicU64::new(size)),
            indexed: Arc::new(AtomicU64::new(indexed.min(size))),
        })
    }

    /// The highest seq on disk, shared with the readers and the groups' leaders (who raise it).
    pub(crate) fn durable(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
    }

    /// The highest seq in the index, shared with the readers and the indexer (which raises it).
    pub(crate) fn indexed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.indexed)
    }

    /// Where the staging bundles end now (bundle, bytes): all of it is durable at open.
    pub(crate) fn position(&self) -> (u64, u64) {
        self.tiles.position()
    }

    pub(crate) fn log_dir(&self) -> PathBuf {
        self.tiles.dir().to_owned()
    }

    pub(crate) fn unsigned_rows(&self) -> u64 {
        self.frontier.size() - self.signed_size
    }

    /// Appends an entry of this gateway's own chain to the open group; returns its seq.
    /// Nothing is visible to the frontier or the chain heads before [`Self::commit`].
    pub(crate) fn insert(&mut self, prepared: super::Prepared) -> Result<u64, String> {
        let super::Prepared {
            mut row,
            body,
            leaf,
            ..
        } = prepared;
        if body.len() > u16::MAX as usize {
            return Err(format!(
                "the audit entry is {} bytes, over the 65,535 the log holds per entry",
                body.len()
            ));
        }
        let open = self.open.get_or_insert_with(|| Open {
            head: hash_bytes(self.heads.get(&self.origin).map_or(GENESIS, String::as_str)),
            leaves: Vec::new(),
            rows: Vec::new(),
        });
        let hash = chain_link(&open.head, &body);
        self.tiles.append(body.as_bytes(), leaf);
        let seq = self.tiles.size();
        row.seq = seq;
        row.source = Arc::clone(&self.source);
        row.prev_hash = open.head;
        row.hash = hash;
        open.rows.push(row);
        open.head = hash;
        open.leaves.push(leaf);
        Ok(seq)
    }

    /// Writes the open group to the staging bundles (not yet to the disk: its leader does
    /// that) and adds it to the frontier and the chain head. On failure nothing of it remains
    /// queued; what reached a file is cut off when the failure stops the log.
    pub(crate) fn commit(&mut self) -> std::io::Result<Flushed> {
        let Some(open) = self.open.take() else {
            return Ok(Flushed::default());
        };
        let segments = match self.tiles.flush() {
            Ok(s) => s,
            Err(e) => {
                self.tiles.discard();
                return Err(e);
            }
        };
        for leaf in &open.leaves {
            self.frontier.push(*leaf);
        }
        self.heads
            .insert(self.origin.clone(), hex::encode(open.head));
        Ok(Flushed {
            segments,
            last_seq: self.tiles.size(),
            rows: open.rows,
        })
    }

    /// After a failed sync: cuts the staging bundles back to `(bundle, len)`, the last
    /// position a sync covered, so the refused entries never reappear.
    pub(crate) fn cut_back(&mut self, at: (u64, u64)) {
        self.open = None;
        if let Err(e) = self.tiles.cut_back(at.0, at.1) {
            tracing::error!(error = %e, "cannot cut the refused entries off the audit log's staging bundle; they may reappear after a restart although their decisions were refused");
        }
    }

    /// Writes `flushed` durably here, not through a group (ingest, rotation, migration).
    fn sync_inline(&mut self, flushed: &Flushed) -> std::io::Result<()> {
        sync_segments(self.tiles.dir(), &flushed.segments)?;
        self.durable.fetch_max(flushed.last_seq, Ordering::SeqCst);
        Ok(())
    }

    /// Writes the open group and makes it durable here (the benchmarks' log builder).
    pub(crate) fn append_durably(&mut self) -> std::io::Result<()> {
        let flushed = self.commit()?;
        self.sync_inline(&flushed)
    }

    /// Waits until the index holds every durable entry (ingest looks duplicates up in it). The
    /// caller waited for the index before the ingest reached this thread, so this covers only
    /// the groups written since: a short bound, since every decision waits on this thread.
    fn wait_indexed(&self) -> Result<(), String> {
        let within = std::time::Duration::from_secs(5);
        match wait_indexed(&self.durable, &self.indexed, within) {
            0 => Ok(()),
            lacking => Err(format!(
                "the audit index lacks {lacking} of the log's entries and did not catch up within 5 s; try again"
            )),
        }
    }

    /// Merges a sidecar's export: all lines or none. Lines already present (same id and hash) are
    /// skipped, so ingesting the same export twice changes nothing. Returns the report and the
    /// index rows of what was added.
    pub(crate) fn ingest(
        &mut self,
        lines: &[AuditExportLine],
    ) -> Result<(IngestReport, Vec<IndexRow>), IngestError> {
        debug_assert!(self.open.is_none(), "the open batch is committed first");
        self.wait_indexed().map_err(IngestError::Refused)?;
        let mut report = IngestReport {
            received: lines.len(),
            ..Default::default()
        };
        let mut heads = self.heads.clone();
        let mut rows: Vec<IndexRow> = Vec::new();
        let mut bodies: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, line) in lines.iter().enumerate() {
            let at = format!("line {}", i + 1);
            let (id, body) = self.checked_line(&at, line).map_err(IngestError::Refused)?;
            if self
                .already_held(&at, id, line, &mut seen)
                .map_err(IngestError::Refused)?
            {
                report.duplicates += 1;
                continue;
            }
            let head = heads.get(&line.source).map_or(GENESIS, String::as_str);
            if line.prev_hash != head {
                return Err(IngestError::Refused(format!(
                    "{at}: entry {id} does not follow the last entry held for source {:?} (expected prevHash {head}); ingest the export from the start, or from the entry after it",
                    line.source
                )));
            }
            heads.insert(line.source.clone(), line.hash.clone());
            let seq = self.tiles.size() + rows.len() as u64 + 1;
            rows.push(IndexRow::from_value(
                seq,
                &line.source,
                &line.entry,
                &line.prev_hash,
                &line.hash,
            ));
            bodies.push(body);
            report.inserted += 1;
        }
        self.append_ingested(&rows, &bodies)
            .map_err(IngestError::Disk)?;
        self.heads = heads;
        Ok((report, rows))
    }

    /// One export line, checked on its own: another source's, within the log's entry size, its
    /// hash chained from its prevHash, with an id. Returns the id and the canonical body.
    fn checked_line<'l>(
        &self,
        at: &str,
        line: &'l AuditExportLine,
    ) -> Result<(&'l str, String), String> {
        if line.source == self.origin {
            return Err(format!(
                "{at}: source {:?} is this gateway's own log; only other sources can be ingested",
                line.source
            ));
        }
        let body = canonical(&line.entry);
        if body.len() > u16::MAX as usize {
            return Err(format!(
                "{at}: the entry is {} bytes, over the 65,535 the log holds per entry",
                body.len()
            ));
        }
        let expected = chain_hash(&line.prev_hash, &body)
            .ok_or_else(|| format!("{at}: prevHash is not 64 hex characters"))?;
        if expected != line.hash {
            return Err(format!(
                "{at}: hash does not match the entry and prevHash; the export was altered"
            ));
        }
        let id = line
            .entry
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}: entry has no id"))?;
        Ok((id, body))
    }

    /// Whether the entry is already in the log with the same hash (a duplicate to skip); an id
    /// held with other content, or named twice in the export, refuses the whole export.
    fn already_held(
        &self,
        at: &str,
        id: &str,
        line: &AuditExportLine,
        seen: &mut std::collections::HashSet<String>,
    ) -> Result<bool, String> {
        let hash = hash_bytes(&line.hash);
        let existing: Option<merkle::Hash> = self
            .conn
            .query_row(
                "SELECT hash FROM audit_index WHERE id = ?1 ORDER BY hash = ?2 DESC LIMIT 1",
                params![id, hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        match existing {
            Some(h) if h == hash => Ok(true),
            Some(_) => Err(format!(
                "{at}: entry {id} is already in the log with different content"
            )),
            None if !seen.insert(id.to_owned()) => {
                Err(format!("{at}: entry {id} appears twice in the export"))
            }
            None => Ok(false),
        }
    }

    /// Appends the ingested rows to the log and makes them durable, their sources first.
    fn append_ingested(&mut self, rows: &[IndexRow], bodies: &[String]) -> Result<(), String> {
        // The runs' sources first, synced: entries without their source would join this
        // gateway's chain on a rebuild.
        let mut start = 0;
        while start < rows.len() {
            let source = &rows[start].source;
            let end = rows[start..]
                .iter()
                .position(|r| &r.source != source)
                .map_or(rows.len(), |p| start + p);
            self.tiles
                .add_run(rows[start].seq, (end - start) as u64, source)
                .map_err(|e| format!("cannot record the ingested entries' source: {e}"))?;
            start = end;
        }
        for body in bodies {
            self.tiles
                .append(body.as_bytes(), merkle::leaf_hash(body.as_bytes()));
        }
        let flushed = Flushed {
            segments: self.tiles.flush().map_err(|e| {
                self.tiles.discard();
                format!("the ingested entries could not be written: {e}")
            })?,
            rows: Vec::new(),
            last_seq: self.tiles.size(),
        };
        self.sync_inline(&flushed)
            .map_err(|e| format!("the ingested entries could not be made durable: {e}"))?;
        for body in bodies {
            self.frontier.push(merkle::leaf_hash(body.as_bytes()));
        }
        Ok(())
    }

    /// Stores verified cosignatures (a cosignature already stored for its size and witness is
    /// kept); returns how many were new.
    pub(crate) fn add_cosignatures(&mut self, rows: &[Cosignature]) -> Result<usize, String> {
        debug_assert!(self.open.is_none(), "the open batch is committed first");
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut added = 0;
        for r in rows {
            added += tx
                .execute(
                    "INSERT OR IGNORE INTO audit_cosignatures (size, witness, line, cosigned_at, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![r.size as i64, r.witness, r.line, r.cosigned_at as i64, crate::clock::now_rfc3339()],
                )
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(added)
    }

    /// Appends the rotation entry `prepared`, makes it durable, signs the checkpoint over it by
    /// `new` and `old` (when there is one), and records, in one transaction, the checkpoint,
    /// `old_vkey` retired at that size and `new`. Returns the checkpoint's size and note.
    pub(crate) fn rotate(
        &mut self,
        prepared: super::Prepared,
        new: &LogKey,
        old: Option<&LogKey>,
        old_vkey: Option<&str>,
    ) -> anyhow::Result<(u64, String)> {
        debug_assert!(self.open.is_none(), "no batch is open in a rotation");
        self.insert(prepared).map_err(anyhow::Error::msg)?;
        let flushed = self.commit().context("cannot write the rotation entry")?;
        self.sync_inline(&flushed)
            .context("the rotation entry could not be made durable")?;
        let (size, root) = (self.frontier.size(), self.frontier.root());
        let mut signers = vec![new];
        signers.extend(old);
        let text = note::sign_note_by(&note::checkpoint_body(new.origin(), size, &root), &signers)
            .map_err(|e| anyhow::anyhow!("cannot sign the handoff checkpoint: {e}"))?;
        let signed = self.signed(text.clone());
        let now = crate::clock::now_rfc3339();
        let tx = self.conn.transaction()?;
        signed.record(&tx)?;
        if let Some(old_vkey) = old_vkey {
            tx.execute(
                "UPDATE audit_keys SET retired_size = ?1, retired_at = ?2 WHERE vkey = ?3",
                params![size as i64, now, old_vkey],
            )?;
        }
        tx.execute(
            "INSERT INTO audit_keys (vkey, first_size, added_at) VALUES (?1, ?2, ?3)",
            params![new.vkey(), size as i64, now],
        )?;
        tx.commit()?;
        Ok((size, text))
    }

    /// Signs a checkpoint over every entry written to the staging bundles, if the log grew
    /// since the last one: the entries of a group still open are not in it. The checkpoint
    /// is published by [`Signed::record`] once those entries are durable.
    pub(crate) fn sign(&mut self, key: &LogKey) -> anyhow::Result<Option<Signed>> {
        let size = self.frontier.size();
        if size <= self.signed_size {
            return Ok(None);
        }
        let note = key
            .sign_note(&note::checkpoint_body(
                key.origin(),
                size,
                &self.frontier.root(),
            ))
            .map_err(|e| anyhow::anyhow!("cannot sign a checkpoint: {e}"))?;
        Ok(Some(self.signed(note)))
    }

    /// `note`, a checkpoint signed over the written entries, with what publishing and
    /// recording it needs.
    fn signed(&mut self, note: String) -> Signed {
        let publication = self.tiles.publication(note.clone());
        debug_assert_eq!(
            publication.size,
            self.frontier.size(),
            "the frontier is the written entries'"
        );
        self.signed_size = self.frontier.size();
        Signed {
            size: self.frontier.size(),
            root: self.frontier.root(),
            note,
            frontier: self.frontier.to_bytes(),
            heads: serde_json::to_string(&self.heads).expect("a map of strings serializes"),
            publication,
        }
    }

    /// Signs and publishes a checkpoint here and now (the benchmarks' log builder; every
    /// entry is durable); returns the latest checkpoint note.
    pub(crate) fn checkpoint(&mut self, key: &LogKey) -> anyhow::Result<Option<String>> {
        debug_assert!(self.open.is_none(), "the open batch is committed first");
        anyhow::ensure!(
            self.durable.load(Ordering::SeqCst) >= self.frontier.size(),
            "the log's last entries are not durable; no checkpoint is signed over them"
        );
        if let Some(signed) = self.sign(key)? {
            signed.record(&self.conn)?;
        }
        Ok(super::keys::latest_checkpoint(&self.conn)?.map(|(_, note)| note))
    }
}

/// A signed checkpoint, not yet published.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) size: u64,
    root: merkle::Hash,
    note: String,
    frontier: Vec<u8>,
    heads: String,
    publication: tiles::Publication,
}

impl Signed {
    /// Publishes the checkpoint in the log directory, then records it (with the frontier and
    /// chain heads a restart starts from) in `conn`. Every entry it covers must be durable.
    pub(crate) fn record(self, conn: &Connection) -> anyhow::Result<()> {
        self.publication
            .publish()
            .context("cannot publish the checkpoint in the log directory")?;
        conn.execute(
            "INSERT INTO audit_checkpoints (size, root, note, created_at, frontier, heads) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                self.size as i64,
                base64::engine::general_purpose::STANDARD.encode(self.root),
                self.note,
                crate::clock::now_rfc3339(),
                self.frontier,
                self.heads
            ],
        )?;
        Ok(())
    }
}

/// Fills the index behind the log: first from the log directory up to its size at start (a
/// lost or old index is rebuilt this way), then from the rows the groups' leaders hand on once they
/// are durable, in one transaction per group it finds waiting.
pub(crate) struct Indexer {
    conn: Connection,
    tiles: TileReader,
    origin: String,
    indexed: Arc<AtomicU64>,
}

impl Indexer {
    pub(crate) fn open(
        path: &Path,
        log_dir: &Path,
        origin: &str,
        indexed: Arc<AtomicU64>,
    ) -> rusqlite::Result<Self> {
        let conn = open(path)?;
        // The index can always be rebuilt from the log: its commits need not wait for the disk.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Self {
            conn,
            tiles: TileReader::new(log_dir),
            origin: origin.to_owned(),
            indexed,
        })
    }

    /// Indexes the log's entries after the index's last, up to `size`.
    pub(crate) fn catch_up(&mut self, size: u64) -> anyhow::Result<()> {
        let from = self.indexed.load(Ordering::SeqCst);
        if from >= size {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // Entries past the log (an index restored from a newer backup) are not the log's.
        self.conn.execute_batch(&format!(
            "DELETE FROM audit_index WHERE seq > {from};
             DELETE FROM audit_index_times WHERE block * {TIME_BLOCK} >= {from};"
        ))?;
        let mut heads: HashMap<String, String> = {
            let mut stmt = self.conn.prepare(
                "SELECT source, hash FROM audit_index WHERE seq IN
                 (SELECT MAX(seq) FROM audit_index GROUP BY source)",
            )?;
            stmt.query_map([], |r| {
                Ok((r.get(0)?, hex::encode(r.get::<_, merkle::Hash>(1)?)))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        tracing::info!(from, to = size, "indexing the audit log");
        let mut chunk = Vec::with_capacity(10_000);
        let (tiles, origin) = (self.tiles.clone(), self.origin.clone());
        let conn = &self.conn;
        let indexed = &self.indexed;
        let flush = |chunk: &mut Vec<IndexRow>| -> anyhow::Result<()> {
            let tx = conn.unchecked_transaction()?;
            index_rows(&tx, chunk)?;
            tx.commit()?;
            if let Some(last) = chunk.last() {
                indexed.store(last.seq, Ordering::SeqCst);
            }
            chunk.clear();
            Ok(())
        };
        replay(&tiles, &origin, from + 1, size, &mut heads, |row, _| {
            chunk.push(row);
            if chunk.len() == 10_000 {
                flush(&mut chunk)?;
            }
            Ok(())
        })?;
        flush(&mut chunk)?;
        tracing::info!(
            entries = size - from,
            seconds = started.elapsed().as_secs_f64(),
            "the audit index caught up with the log"
        );
        Ok(())
    }

    /// Indexes `rows` (durable, in seq order), skipping any already indexed; entries before
    /// them that are not indexed yet (a group whose indexing failed) are read from the log first.
    pub(crate) fn add(&mut self, rows: &[IndexRow]) -> anyhow::Result<()> {
        let done = self.indexed.load(Ordering::SeqCst);
        let start = rows.partition_point(|r| r.seq <= done);
        let rows = &rows[start..];
        let Some((first, last)) = rows.first().zip(rows.last()) else {
            return Ok(());
        };
        if first.seq > done + 1 {
            self.catch_up(first.seq - 1)?;
        }
        let tx = self.conn.transaction()?;
        index_rows(&tx, rows)?;
        tx.commit()?;
        self.indexed.store(last.seq, Ordering::SeqCst);
        Ok(())
    }
}

/// Filters of `GET /admin/audit`.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuditQuery {
    pub(crate) limit: usize,
    pub(crate) decision: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) trace_id: Option<String>,
}

/// One entry of the index, as [`Reader::index_rows`] gives it.
#[derive(Debug, Clone)]
pub(crate) struct IndexedEntry {
    pub(crate) seq: u64,
    pub(crate) source: String,
    pub(crate) timestamp: String,
    pub(crate) agent_id: Option<String>,
    pub(crate) action: String,
    pub(crate) decision: String,
    /// The entry's JSON text, byte for byte as in the log's entry bundle.
    pub(crate) body: String,
}

/// A witness's cosignature of the checkpoint of `size`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cosignature {
    pub(crate) size: u64,
    pub(crate) witness: String,
    pub(crate) line: String,
    pub(crate) cosigned_at: u64,
}

/// The result of re-checking every chain and checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyReport {
    pub(crate) valid: bool,
    pub(crate) entries: u64,
    pub(crate) sources: usize,
    pub(crate) checkpoints: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latest_checkpoint_size: Option<u64>,
    /// The first problem found, naming the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_bad: Option<BadRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BadRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    pub(crate) problem: String,
}

/// A read connection, shared by the query handlers. Lists, stats and exports stop at the
/// highest seq known to be on disk: a row committed but not yet synced may still be lost (its
/// decision is then refused), so no reader and no other gateway ingesting an export sees it.
#[derive(Debug)]
pub(crate) struct Reader {
    conn: Mutex<Connection>,
    /// The database file: a long walk (verify) opens its own connection to it rather than hold
    /// the shared one, which every list, stat and export waits on.
    path: PathBuf,
    tiles: TileReader,
    durable: Arc<AtomicU64>,
    indexed: Arc<AtomicU64>,
}

/// A failure to read the log directory where the index pointed, as the readers report it.
fn log_read(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(format!(
        "the audit log directory cannot be read: {e}"
    ))))
}

fn record(
    seq: u64,
    source: String,
    body: &str,
    hash: &merkle::Hash,
) -> rusqlite::Result<AuditRecord> {
    let entry: AuditEntry = serde_json::from_str(body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(AuditRecord {
        entry,
        seq,
        source,
        hash: hex::encode(hash),
    })
}

/// `2026-01-01` means the start of that day (the end, with `end`); anything else is taken as a
/// timestamp. Shared by the local and the central audit queries.
pub(crate) fn bound(date: &str, end: bool) -> String {
    if date.len() == 10 {
        if end {
            format!("{date}T23:59:59.999Z")
        } else {
            format!("{date}T00:00:00.000Z")
        }
    } else {
        date.to_owned()
    }
}

/// `(total, allowed, denied, top denied actions with counts)`.
pub(crate) type Stats = (u64, u64, u64, Vec<(String, u64)>);

impl Reader {
    pub(crate) fn open(
        path: &Path,
        log_dir: &Path,
        durable: Arc<AtomicU64>,
        indexed: Arc<AtomicU64>,
    ) -> rusqlite::Result<Self> {
        Ok(Self {
            conn: Mutex::new(open(path)?),
            path: path.to_owned(),
            tiles: TileReader::new(log_dir),
            durable,
            indexed,
        })
    }

    /// How far lists, stats and exports go: the index's last entry, which is durable (the
    /// index is filled from durable entries only).
    fn durable(&self) -> i64 {
        i64::try_from(self.indexed.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
    }

    /// The last seq the index holds: what lists and exports reach now.
    pub(crate) fn indexed_through(&self) -> u64 {
        self.indexed.load(Ordering::SeqCst)
    }

    /// Entries durable in the log but not yet in the index (so not yet in lists and stats).
    pub(crate) fn index_lag(&self) -> u64 {
        self.durable_size()
            .saturating_sub(self.indexed.load(Ordering::SeqCst))
    }

    /// Waits, up to `within`, until the index holds every entry durable now (a decision just
    /// answered is then listed); returns how many it still lacks.
    pub(crate) fn wait_indexed(&self, within: std::time::Duration) -> u64 {
        wait_indexed(&self.durable, &self.indexed, within)
    }

    /// The log directory's reader.
    pub(crate) fn tiles(&self) -> &TileReader {
        &self.tiles
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// The log's checkpoint keys, oldest first.
    pub(crate) fn keys(&self) -> rusqlite::Result<Vec<super::keys::KeyRecord>> {
        self.with(super::keys::records)
    }

    /// Matching entries, newest first.
    pub(crate) fn query(&self, q: &AuditQuery) -> rusqlite::Result<Vec<AuditRecord>> {
        self.with(|c| {
            let (from, to) = (
                q.from.as_deref().map(|d| bound(d, false)),
                q.to.as_deref().map(|d| bound(d, true)),
            );
            let (lo, hi) = time_span(c, from.as_deref(), to.as_deref())?;
            let mut stmt = c.prepare_cached(
                "SELECT seq, source, hash FROM audit_index
                 WHERE (?1 IS NULL OR decision = ?1)
                   AND (?2 IS NULL OR timestamp >= ?2)
                   AND (?3 IS NULL OR timestamp <= ?3)
                   AND (?4 IS NULL OR agent_id = ?4 OR agent_name = ?4)
                   AND (?5 IS NULL OR action = ?5)
                   AND (?6 IS NULL OR trace_id = ?6)
                   AND seq >= ?9 AND seq <= min(?8, ?10)
                 ORDER BY seq DESC LIMIT ?7",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        q.decision,
                        from,
                        to,
                        q.agent,
                        q.action,
                        q.trace_id,
                        q.limit as i64,
                        self.durable(),
                        lo,
                        hi
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)? as u64,
                            r.get::<_, String>(1)?,
                            r.get::<_, merkle::Hash>(2)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let bodies = self.entries_at(rows.iter().map(|r| r.0))?;
            rows.into_iter()
                .map(|(seq, source, hash)| record(seq, source, &bodies[&seq], &hash))
                .collect()
        })
    }

    /// The log's entry at each of `seqs`, read from the entry bundles (each bundle once).
    fn entries_at(
        &self,
        seqs: impl IntoIterator<Item = u64>,
    ) -> rusqlite::Result<HashMap<u64, String>> {
        let size = self.durable_size();
        let mut by_bundle: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for seq in seqs {
            by_bundle
                .entry((seq - 1) / tiles::WIDTH)
                .or_default()
                .push(seq);
        }
        let mut out = HashMap::new();
        for (n, seqs) in by_bundle {
            let entries = self.tiles.bundle(n, size).map_err(log_read)?;
            for seq in seqs {
                let entry = entries
                    .get(((seq - 1) % tiles::WIDTH) as usize)
                    .ok_or_else(|| {
                        log_read(std::io::Error::other(format!(
                            "entry {seq} is indexed but not in the log's bundle {n}; the log directory was altered (GET /admin/audit/verify)"
                        )))
                    })?;
                let text = String::from_utf8(entry.clone()).map_err(|_| {
                    log_read(std::io::Error::other(format!(
                        "entry {seq} is not UTF-8; the log directory was altered (GET /admin/audit/verify)"
                    )))
                })?;
                out.insert(seq, text);
            }
        }
        Ok(out)
    }

    /// `(total, allowed, denied, top denied actions)` since `since`: decisions only (not the
    /// gateway's own configuration, key rotation or system alert entries).
    pub(crate) fn stats(&self, since: &str) -> rusqlite::Result<Stats> {
        self.with(|c| {
            let (lo, _) = time_span(c, Some(since), None)?;
            let (total, allowed, denied) = c.query_row(
                "SELECT COALESCE(SUM(decision IN ('allow', 'deny')), 0), COALESCE(SUM(decision = 'allow'), 0), COALESCE(SUM(decision = 'deny'), 0)
                 FROM audit_index WHERE timestamp >= ?1 AND seq >= ?3 AND seq <= ?2",
                params![since, self.durable(), lo],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT action, COUNT(*) AS n FROM audit_index
                 WHERE timestamp >= ?1 AND decision = 'deny' AND seq >= ?3 AND seq <= ?2
                 GROUP BY action ORDER BY n DESC, action LIMIT 10",
            )?;
            let top = stmt
                .query_map(params![since, self.durable(), lo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((total, allowed, denied, top))
        })
    }

    /// Export lines after `after` (a seq), optionally of one source, oldest first.
    pub(crate) fn export(
        &self,
        source: Option<&str>,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<AuditExportLine>> {
        Ok(self
            .export_parts(source, after, limit)?
            .into_iter()
            .map(|p| AuditExportLine {
                seq: p.seq,
                source: p.source,
                prev_hash: hex::encode(p.prev_hash),
                hash: hex::encode(p.hash),
                entry: serde_json::from_str(&p.body).unwrap_or(Value::String(p.body)),
            })
            .collect())
    }

    /// The lines [`Self::export`] gives, up to seq `through`, written as JSON lines into `out`
    /// with each entry exactly as the log holds it (checked to be JSON, not parsed into a value
    /// and written again: that was most of the gateway's cost of an evidence export). An entry
    /// that is not JSON on one line (an altered log) is written as `export` gives it. Returns
    /// how many lines were read and the last seq written.
    pub(crate) fn export_jsonl(
        &self,
        source: Option<&str>,
        after: u64,
        limit: usize,
        through: u64,
        out: &mut Vec<u8>,
    ) -> rusqlite::Result<(usize, Option<u64>)> {
        let parts = self.export_parts(source, after, limit)?;
        let read = parts.len();
        let mut last = None;
        for p in parts.into_iter().take_while(|p| p.seq <= through) {
            last = Some(p.seq);
            p.write_line(out);
        }
        Ok((read, last))
    }

    /// What export lines are made of, read from the index and the log.
    fn export_parts(
        &self,
        source: Option<&str>,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<ExportParts>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, source, prev_hash, hash FROM audit_index
                 WHERE (?1 IS NULL OR source = ?1) AND seq > ?2 AND seq <= ?4
                 ORDER BY seq LIMIT ?3",
            )?;
            let params = params![source, after as i64, limit as i64, self.durable()];
            let rows = stmt
                .query_map(params, |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, String>(1)?,
                        r.get::<_, merkle::Hash>(2)?,
                        r.get::<_, merkle::Hash>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut bodies = self.entries_at(rows.iter().map(|r| r.0))?;
            Ok(rows
                .into_iter()
                .map(|(seq, source, prev_hash, hash)| ExportParts {
                    seq,
                    source,
                    prev_hash,
                    hash,
                    body: bodies.remove(&seq).unwrap_or_default(),
                })
                .collect())
        })
    }

    /// Index rows after `after`, oldest first, durable ones only, with the entry's text exactly
    /// as the log holds it (its leaf hash is over these bytes): what the central index copies.
    pub(crate) fn index_rows(
        &self,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<IndexedEntry>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, source, timestamp, agent_id, action, decision FROM audit_index
                 WHERE seq > ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = stmt
                .query_map(params![after as i64, limit as i64, self.durable()], |r| {
                    Ok(IndexedEntry {
                        seq: r.get::<_, i64>(0)? as u64,
                        source: r.get(1)?,
                        timestamp: r.get(2)?,
                        agent_id: r.get(3)?,
                        action: r.get(4)?,
                        decision: r.get(5)?,
                        body: String::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut bodies = self.entries_at(rows.iter().map(|r| r.seq))?;
            for r in &mut rows {
                r.body = bodies.remove(&r.seq).unwrap_or_default();
            }
            Ok(rows)
        })
    }

    /// The latest `limit` signed checkpoints, newest first: `(size, note)`.
    pub(crate) fn checkpoints(&self, limit: usize) -> rusqlite::Result<Vec<(u64, String)>> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?;
            rows.collect()
        })
    }

    /// Every stored cosignature, with the note of the checkpoint at its size (None when no
    /// checkpoint of that size is stored any more).
    pub(crate) fn cosignatures(&self) -> rusqlite::Result<Vec<(Cosignature, Option<String>)>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT s.size, s.witness, s.line, s.cosigned_at, c.note
                 FROM audit_cosignatures s LEFT JOIN audit_checkpoints c ON c.size = s.size
                 ORDER BY s.size, s.witness",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    Cosignature {
                        size: r.get::<_, i64>(0)? as u64,
                        witness: r.get(1)?,
                        line: r.get(2)?,
                        cosigned_at: r.get::<_, i64>(3)? as u64,
                    },
                    r.get(4)?,
                ))
            })?;
            rows.collect()
        })
    }

    /// The latest signed checkpoint: `(size, note)`.
    pub(crate) fn latest_checkpoint(&self) -> rusqlite::Result<Option<(u64, String)>> {
        self.checkpoint_at(None)
    }

    /// The signed checkpoint of `size` entries, or the latest when `size` is None.
    pub(crate) fn checkpoint_at(
        &self,
        size: Option<u64>,
    ) -> rusqlite::Result<Option<(u64, String)>> {
        self.with(|c| {
            c.query_row(
                "SELECT size, note FROM audit_checkpoints WHERE ?1 IS NULL OR size = ?1
                 ORDER BY size DESC LIMIT 1",
                [size.map(|s| s as i64)],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()
        })
    }

    /// The seq of an entry id.
    pub(crate) fn seq_of(&self, id: &str) -> rusqlite::Result<Option<u64>> {
        self.with(|c| {
            c.query_row(
                "SELECT seq FROM audit_index WHERE id = ?1 ORDER BY seq LIMIT 1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|s| s.map(|s| s as u64))
        })
    }

    /// The leaf hash of the entry at leaf `index` and its audit path in the tree of `size`.
    pub(crate) fn inclusion(
        &self,
        index: u64,
        size: u64,
    ) -> std::io::Result<(merkle::Hash, Vec<merkle::Hash>)> {
        let t = &self.tiles;
        let leaf = t.complete(index, 0, size)?;
        let mut mth = |lo, hi| merkle::range_root(lo, hi, &mut |s, h| t.complete(s, h, size));
        Ok((leaf, merkle::inclusion_proof_with(index, size, &mut mth)?))
    }

    /// How many entries are durable.
    pub(crate) fn durable_size(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// The root of the tree of the first `size` entries (from the stored tiles), with `size`
    /// no larger than the durable log.
    pub(crate) fn root_at(&self, size: u64) -> std::io::Result<merkle::Hash> {
        self.tiles.root(size)
    }

    /// The leaf hashes of every entry ingested from `source`, in log order: the tree of that
    /// source's own log, which its signed checkpoints cover.
    pub(crate) fn source_leaves(&self, source: &str) -> rusqlite::Result<Vec<merkle::Hash>> {
        let seqs = self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq FROM audit_index WHERE source = ?1 AND seq <= ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![source, self.durable()], |r| {
                r.get::<_, i64>(0).map(|s| s as u64)
            })?;
            rows.collect::<rusqlite::Result<Vec<u64>>>()
        })?;
        let size = self.durable_size();
        let mut tile: Option<(u64, Vec<merkle::Hash>)> = None;
        seqs.into_iter()
            .map(|seq| {
                let n = (seq - 1) / tiles::WIDTH;
                if tile.as_ref().is_none_or(|(m, _)| *m != n) {
                    tile = Some((n, self.tiles.hashes(0, n, size).map_err(log_read)?));
                }
                let hashes = &tile.as_ref().expect("just read").1;
                hashes
                    .get(((seq - 1) % tiles::WIDTH) as usize)
                    .copied()
                    .ok_or_else(|| {
                        log_read(std::io::Error::other(format!(
                            "entry {seq} is indexed but not in the log"
                        )))
                    })
            })
            .collect()
    }

    /// The consistency proof from the tree of `m` leaves to the tree of `size`, and the root of
    /// the first `m` leaves.
    pub(crate) fn consistency(
        &self,
        m: u64,
        size: u64,
    ) -> std::io::Result<(Vec<merkle::Hash>, merkle::Hash)> {
        let t = &self.tiles;
        let mut complete = |s, h| t.complete(s, h, size);
        let old_root = merkle::range_root(0, m, &mut complete)?;
        let mut mth = |lo, hi| merkle::range_root(lo, hi, &mut complete);
        Ok((merkle::consistency_proof_with(m, size, &mut mth)?, old_root))
    }

    /// Recomputes every chain, every leaf and every checkpoint; names the first bad row.
    pub(crate) fn verify(&self, vkey: &str, origin: &str) -> anyhow::Result<VerifyReport> {
        // Its own connection: the walk reads every row, and the shared one serves queries.
        let own = open(&self.path)?;
        let c: &Connection = &own;
        let keys = signing_keys(c, vkey)?;
        // Oldest last, so the next one due is popped as the walk reaches its size.
        let mut checkpoints = checkpoints(c)?;
        let mut report = VerifyReport {
            valid: true,
            entries: 0,
            sources: 0,
            checkpoints: checkpoints.len(),
            latest_checkpoint_size: checkpoints.last().map(|(s, _)| *s),
            first_bad: None,
        };
        checkpoints.reverse();
        let size = self.durable_size();
        let mut heads: HashMap<String, String> = HashMap::new();
        let mut frontier = Frontier::default();
        // The index, row by row beside the log: a row that differs was altered there.
        let indexed = self.indexed.load(Ordering::SeqCst).min(size);
        let mut stmt = c.prepare(
            "SELECT seq, id, source, timestamp, agent_id, agent_name, action, decision, trace_id, prev_hash, hash
             FROM audit_index WHERE seq <= ?1 ORDER BY seq",
        )?;
        let mut index = IndexWalk::start(stmt.query([indexed as i64])?)?;
        let mut times = TimeBounds::read(c)?;
        let replayed = replay(&self.tiles, origin, 1, size, &mut heads, |entry, body| {
            report.entries += 1;
            let seq = entry.seq;
            if entry.id == IndexRow::missing_id(seq) {
                report.fail(Some(seq), None, "the log's entry is not an audit entry with an id; the log directory was altered".into());
            }
            index.compare(&entry, indexed, &mut report)?;
            if seq <= indexed {
                times.see(&entry, &mut report);
            }
            frontier.push(merkle::leaf_hash(body.as_bytes()));
            while let Some((size, _)) = checkpoints.last() {
                if *size != frontier.size() {
                    break;
                }
                let (size, note_text) = checkpoints.pop().expect("peeked");
                let signed = SignedBy {
                    keys: &keys,
                    origin,
                };
                if let Err(problem) = signed.check(size, &note_text, &frontier.root()) {
                    report.fail(Some(seq), None, problem);
                }
            }
            Ok(())
        });
        if let Err(e) = replayed {
            report.fail(
                Some(frontier.size() + 1),
                None,
                format!("the log directory cannot be read: {e:#}"),
            );
        }
        times.finish(&mut report);
        if let Some(row) = index.row.filter(|r| r.seq > frontier.size()) {
            report.fail(
                Some(row.seq),
                Some(row.id),
                "the index holds an entry the log does not".into(),
            );
        }
        if let Some((size, _)) = checkpoints.last() {
            report.fail(
                None,
                None,
                format!(
                    "a signed checkpoint covers {size} entries but the log holds only {}; entries were removed",
                    frontier.size()
                ),
            );
        }
        report.sources = heads.len();
        Ok(report)
    }
}

/// The keys that signed the log, each with the sizes it covers; a log that never rotated has
/// only its current key.
fn signing_keys(c: &Connection, vkey: &str) -> anyhow::Result<Vec<super::keys::KeyRecord>> {
    let mut keys = super::keys::records(c)?;
    if keys.is_empty() {
        keys.push(super::keys::KeyRecord {
            vkey: vkey.to_owned(),
            first_size: 0,
            retired_size: None,
        });
    }
    Ok(keys)
}

/// Every stored checkpoint, smallest first.
fn checkpoints(c: &Connection) -> rusqlite::Result<Vec<(u64, String)>> {
    let mut stmt = c.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")?;
    stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
    })?
    .collect()
}

impl VerifyReport {
    /// Records a problem; the first one found is the one reported.
    fn fail(&mut self, seq: Option<u64>, id: Option<String>, problem: String) {
        if self.first_bad.is_none() {
            self.valid = false;
            self.first_bad = Some(BadRow { seq, id, problem });
        }
    }
}

/// The index's rows, read in step with the log's entries.
struct IndexWalk<'s> {
    rows: rusqlite::Rows<'s>,
    row: Option<IndexRow>,
}

impl<'s> IndexWalk<'s> {
    fn start(rows: rusqlite::Rows<'s>) -> rusqlite::Result<Self> {
        let mut walk = Self { rows, row: None };
        walk.advance()?;
        Ok(walk)
    }

    fn advance(&mut self) -> rusqlite::Result<()> {
        self.row = match self.rows.next()? {
            Some(r) => Some(IndexRow {
                seq: r.get::<_, i64>(0)? as u64,
                id: r.get(1)?,
                source: r.get(2)?,
                timestamp: r.get(3)?,
                agent_id: r.get(4)?,
                agent_name: r.get(5)?,
                action: r.get(6)?,
                decision: r.get(7)?,
                trace_id: r.get(8)?,
                prev_hash: r.get(9)?,
                hash: r.get(10)?,
            }),
            None => None,
        };
        Ok(())
    }

    /// Compares the log's entry with its index row, every column: a row that differs was
    /// altered (a list filtered on it would show what the log does not say), and an entry the
    /// index should hold (at or below `indexed`) and does not is missing.
    fn compare(
        &mut self,
        entry: &IndexRow,
        indexed: u64,
        report: &mut VerifyReport,
    ) -> rusqlite::Result<()> {
        let seq = entry.seq;
        while self.row.as_ref().is_some_and(|r| r.seq < seq) {
            self.advance()?;
        }
        match &self.row {
            Some(row) if row.seq == seq => {
                if row != entry {
                    report.fail(Some(seq), Some(row.id.clone()), format!("the index row differs from the log's entry in {}: one of them was altered (the log is what checkpoints sign)", row.differences(entry).join(", ")));
                }
            }
            _ if seq <= indexed => {
                report.fail(
                    Some(seq),
                    Some(entry.id.clone()),
                    format!("row {seq} is missing from the index"),
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// The index's time table beside the timestamps of the entries the index holds: a block whose
/// stored bounds do not cover its entries' timestamps would hide them from time-bounded lists
/// and stats.
struct TimeBounds {
    stored: HashMap<u64, (String, String)>,
    /// The block being read: its number and its entries' earliest and latest timestamps.
    current: Option<(u64, String, String)>,
}

impl TimeBounds {
    fn read(c: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = c.prepare("SELECT block, min_ts, max_ts FROM audit_index_times")?;
        let stored = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as u64, (r.get(1)?, r.get(2)?)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Self {
            stored,
            current: None,
        })
    }

    fn see(&mut self, entry: &IndexRow, report: &mut VerifyReport) {
        let block = entry.block();
        match &mut self.current {
            Some((b, lo, hi)) if *b == block => {
                if entry.timestamp < *lo {
                    lo.clone_from(&entry.timestamp);
                }
                if entry.timestamp > *hi {
                    hi.clone_from(&entry.timestamp);
                }
            }
            _ => {
                self.finish(report);
                let ts = entry.timestamp.clone();
                self.current = Some((block, ts.clone(), ts));
            }
        }
    }

    /// Checks the block read last against its stored bounds.
    fn finish(&mut self, report: &mut VerifyReport) {
        let Some((block, lo, hi)) = self.current.take() else {
            return;
        };
        let covered = self
            .stored
            .get(&block)
            .is_some_and(|(min, max)| *min <= lo && *max >= hi);
        if !covered {
            let first = block * TIME_BLOCK + 1;
            report.fail(
                Some(first),
                None,
                format!(
                    "the index's time bounds for entries {first} to {} do not cover their timestamps ({lo} to {hi}): time-bounded lists and stats would miss entries; the index was altered",
                    first + TIME_BLOCK - 1
                ),
            );
        }
    }
}

/// The keys and origin a checkpoint of this log must be signed with.
struct SignedBy<'a> {
    keys: &'a [super::keys::KeyRecord],
    origin: &'a str,
}

impl SignedBy<'_> {
    /// The checkpoint at `size` verifies under the key of its range (at a rotation's handoff,
    /// either key), names this log and size, and signs the root the log's entries hash to.
    fn check(&self, size: u64, note_text: &str, root: &merkle::Hash) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut verified = None;
        for k in self.keys.iter().filter(|k| k.covers(size)) {
            match note::verify_checkpoint(&k.vkey, note_text) {
                Ok(cp) => {
                    verified = Some(cp);
                    break;
                }
                Err(e) => problems.push(format!("key {}: {e}", super::keys::key_id(&k.vkey))),
            }
        }
        let cp = verified.ok_or_else(|| {
            if problems.is_empty() {
                format!(
                    "checkpoint at size {size}: no key of this log signs checkpoints of that size"
                )
            } else {
                format!("checkpoint at size {size}: {}", problems.join("; "))
            }
        })?;
        if cp.origin != self.origin || cp.size != size {
            return Err(format!(
                "checkpoint at size {size} names origin {} size {}",
                cp.origin, cp.size
            ));
        }
        if &cp.root != root {
            return Err(format!(
                "the log's first {size} entries no longer hash to the signed checkpoint root; an entry was altered, removed or inserted"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{AuditConfig, AuditLog, keys::KeySource};
    use super::{AuditExportLine, AuditQuery};

    fn open_log(dir: &std::path::Path) -> AuditLog {
        open_log_signing_every(dir, 1_000_000)
    }

    /// A log that signs a checkpoint after `every` entries (the interval an hour).
    fn open_log_signing_every(dir: &std::path::Path, every: u64) -> AuditLog {
        let db_path = dir.join("meshguard.db");
        drop(crate::store::SqliteStore::open(&db_path).unwrap());
        AuditLog::open(AuditConfig {
            db_path,
            log_dir: dir.join("audit-log"),
            key: KeySource::File(dir.join("audit-log.key")),
            origin: "test.example/meshguard-audit".to_owned(),
            checkpoint_every: every,
            checkpoint_interval: Duration::from_secs(3600),
            redaction: crate::redaction::Redaction::None,
        })
        .unwrap()
    }

    fn decision(action: &str) -> meshguard_api::AuditEntry {
        meshguard_api::AuditEntry {
            id: crate::ids::new_time_ordered_id("aud"),
            timestamp: crate::clock::now_rfc3339(),
            event: "decision".into(),
            action: action.into(),
            decision: "allow".into(),
            outcome: "allow".into(),
            mode: "enforce".into(),
            ..Default::default()
        }
    }

    /// Waits (30 s at most) for a queued entry to be durable; its seq.
    fn durable_seq(
        rt: &tokio::runtime::Runtime,
        queued: &mut super::super::Queued,
        what: &str,
    ) -> u64 {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), queued.durable()).await })
            .unwrap_or_else(|_| panic!("{what}: not durable after 30 s"))
            .unwrap()
    }

    /// The actions of the log's entries, in log order, once the index holds them all.
    fn logged_actions(log: &AuditLog) -> Vec<String> {
        let reader = log.reader();
        reader.wait_indexed(Duration::from_secs(30));
        reader
            .export(None, 0, 10_000)
            .unwrap()
            .iter()
            .map(|l| l.entry["action"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until `size` entries are durable, naming `what` if they never are.
    fn wait_durable(log: &AuditLog, size: u64, what: &str) {
        let reader = log.reader();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while reader.durable_size() < size {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {} of {size} entries durable after 30 s",
                reader.durable_size()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every way the duty to lead a group can be left unspent, and the entry is still
    /// written: the caller drops its entry unawaited (an alert's system entry), leaves the lead
    /// to the writer thread (a batch), or stops waiting during the leader's first yields (a
    /// timeout). Followers queued behind such a lead are written with it.
    #[test]
    fn an_entry_whose_lead_is_left_unspent_is_written_by_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let rt = runtime();
        // Dropped at once: its lead, and the follower queued behind it.
        let first = log.queue(decision("read:dropped")).unwrap();
        let mut follower = log.queue(decision("read:follower")).unwrap();
        drop(first);
        assert_eq!(durable_seq(&rt, &mut follower, "behind a dropped lead"), 2);
        wait_durable(&log, 2, "a dropped lead");
        // Left to the writer thread, then awaited.
        let mut left = log.queue(decision("read:left")).unwrap().lead_elsewhere();
        assert_eq!(durable_seq(&rt, &mut left, "left to the writer thread"), 3);
        // The caller stops waiting while the lead yields (its wait polled once, then given
        // up, as a timeout does), then waits again: the writer thread writes it, once.
        let mut hurried = log.queue(decision("read:hurried")).unwrap();
        let gave_up = rt.block_on(async {
            tokio::select! {
                biased;
                _ = hurried.durable() => false,
                () = std::future::ready(()) => true,
            }
        });
        assert!(gave_up, "the lead yields before it leads");
        assert_eq!(
            durable_seq(&rt, &mut hurried, "a lead given up in its yields"),
            4
        );
        wait_durable(&log, 4, "a lead cancelled in its yields");
        let actions = logged_actions(&log);
        assert_eq!(
            actions,
            ["read:dropped", "read:follower", "read:left", "read:hurried"],
            "each entry written once, in order"
        );
    }

    /// A leader writes at most four groups of 1,024 and hands the rest to the writer thread:
    /// 5,000 entries queued behind one lead are all written, once, in order, though the lead
    /// itself stops after 4,096.
    #[test]
    fn a_leader_hands_on_what_is_left_after_its_groups_and_nothing_is_stranded() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let mut queued: Vec<_> = (0..5_000)
            .map(|i| log.queue(decision(&format!("read:queued/{i}"))).unwrap())
            .collect();
        let rt = runtime();
        assert_eq!(durable_seq(&rt, &mut queued[0], "the leader"), 1);
        assert_eq!(
            durable_seq(&rt, &mut queued[4_999], "the last, past the lead's groups"),
            5_000
        );
        wait_durable(&log, 5_000, "5,000 entries behind one lead");
        let actions = logged_actions(&log);
        assert_eq!(actions.len(), 5_000, "each entry once");
        assert!(
            actions
                .iter()
                .enumerate()
                .all(|(i, a)| *a == format!("read:queued/{i}")),
            "in the order queued"
        );
    }

    /// An entry queued behind a lead not yet run is the caller's to withdraw, and then never
    /// written; the leader writes the rest.
    #[test]
    fn an_entry_withdrawn_before_its_group_is_taken_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let mut leader = log.queue(decision("read:leader")).unwrap();
        let withdrawn = log.queue(decision("read:withdrawn")).unwrap();
        let mut kept = log.queue(decision("read:kept")).unwrap();
        assert!(withdrawn.withdraw(), "no leader has taken it yet");
        let rt = runtime();
        assert_eq!(durable_seq(&rt, &mut leader, "the leader"), 1);
        assert_eq!(durable_seq(&rt, &mut kept, "behind the leader"), 2);
        let actions = logged_actions(&log);
        assert_eq!(actions, ["read:leader", "read:kept"]);
    }

    /// Checkpoints signed because entries were written come at most once a second (each one
    /// publishes partial tiles and syncs them), and once a burst ends, the 100 or more of its
    /// entries not yet signed are signed about a second later, not at the hour's interval
    /// (fewer than 100 wait for the interval, as configured). 3,000 entries from 100 tasks at
    /// a checkpoint every 100: before the bound, about 30 checkpoints within the run.
    #[test]
    fn checkpoints_for_written_entries_come_at_most_once_a_second_and_cover_a_burst() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log_signing_every(dir.path(), 100);
        let started = std::time::Instant::now();
        runtime().block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|t| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        for i in 0..30 {
                            let entry = decision(&format!("read:burst/{t}/{i}"));
                            log.append(entry).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        let conn = super::super::store_conn(&dir.path().join("meshguard.db")).unwrap();
        let signed = |conn: &rusqlite::Connection| {
            super::super::keys::latest_checkpoint(conn)
                .unwrap()
                .map_or(0, |(size, _)| size)
        };
        while signed(&conn) + 100 <= 3_000 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "100 or more of the burst's entries were not signed within a minute (signed: {}); the interval is an hour",
                signed(&conn)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        let count: u64 = conn
            .query_row("SELECT COUNT(*) FROM audit_checkpoints", [], |r| r.get(0))
            .unwrap();
        assert!(
            count <= elapsed.as_secs() + 2,
            "{count} checkpoints in {elapsed:?}: more than one a second"
        );
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Lists and stats bounded in time read the time table to narrow their scan. Entries need
    /// not be in time order (an ingested entry keeps its own timestamp, clocks step back), so
    /// 1,500 entries, a fifth of them out of order by up to an hour either way, over six
    /// blocks: for 300 random bounds (some open, some before or after every entry, some at an
    /// entry's exact time), the list and the stats are what a scan of every entry gives.
    #[test]
    fn time_bounded_lists_and_stats_are_what_a_scan_of_every_entry_gives() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let base = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let at = |secs: i64| crate::clock::rfc3339(base + chrono::Duration::seconds(secs));
        let mut stamps = Vec::new();
        runtime().block_on(async {
            for i in 0..1_500i64 {
                let offset = if next(5) == 0 {
                    next(7_200) as i64 - 3_600
                } else {
                    0
                };
                let timestamp = at(i * 10 + offset);
                stamps.push(timestamp.clone());
                let decision = if next(3) == 0 { "deny" } else { "allow" };
                let entry = meshguard_api::AuditEntry {
                    id: crate::ids::new_time_ordered_id("aud"),
                    timestamp,
                    event: "decision".into(),
                    action: format!("read:x/{}", next(4)),
                    decision: decision.into(),
                    outcome: decision.into(),
                    mode: "enforce".into(),
                    ..Default::default()
                };
                log.append(entry).await.unwrap();
            }
        });
        let reader = log.reader();
        reader.wait_indexed(Duration::from_secs(60));
        // The scan: every entry as the log holds it (the export reads the log, not the table).
        let all = reader.export(None, 0, 100_000).unwrap();
        assert_eq!(all.len(), 1_500);
        let field = |l: &AuditExportLine, k: &str| l.entry[k].as_str().unwrap().to_owned();
        let bound_at = |next: &mut dyn FnMut(u64) -> u64| match next(4) {
            0 => None,
            1 => Some(stamps[next(stamps.len() as u64) as usize].clone()),
            _ => Some(at(next(22_000) as i64 - 3_700)),
        };
        for round in 0..300 {
            let (from, to) = (bound_at(&mut next), bound_at(&mut next));
            let q = AuditQuery {
                limit: 100_000,
                from: from.clone(),
                to: to.clone(),
                ..Default::default()
            };
            let listed: Vec<u64> = reader.query(&q).unwrap().iter().map(|r| r.seq).collect();
            let scanned: Vec<u64> = all
                .iter()
                .rev()
                .filter(|l| from.as_ref().is_none_or(|f| field(l, "timestamp") >= *f))
                .filter(|l| to.as_ref().is_none_or(|t| field(l, "timestamp") <= *t))
                .map(|l| l.seq)
                .collect();
            if listed != scanned {
                let first = listed.iter().zip(&scanned).position(|(a, b)| a != b);
                panic!(
                    "round {round}: from {from:?} to {to:?}: {} listed, {} by the scan, first difference at {first:?}",
                    listed.len(),
                    scanned.len()
                );
            }
            if let Some(since) = from {
                let (total, allowed, denied, _) = reader.stats(&since).unwrap();
                let since_then: Vec<_> = all
                    .iter()
                    .filter(|l| field(l, "timestamp") >= since)
                    .collect();
                let count = |d: &str| {
                    since_then
                        .iter()
                        .filter(|l| field(l, "decision") == d)
                        .count() as u64
                };
                assert_eq!(
                    (total, allowed, denied),
                    (since_then.len() as u64, count("allow"), count("deny")),
                    "round {round}: since {since}"
                );
            }
        }
    }

    /// An export line written with the entry as the log holds it is, parsed, the line
    /// `export` gives, for entries as the gateway writes them and for a log's altered ones (not
    /// JSON, or JSON over two lines): one line each, every one JSON.
    #[test]
    fn export_lines_written_raw_are_the_lines_export_gives() {
        let bodies = [
            r#"{"action":"read:x","decision":"allow","id":"aud_1","meta":{"f":0.25,"q":"a\"b"}}"#,
            "not json {",
            "{\"a\":\n1}",
            r#""a string""#,
        ];
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            super::ExportParts {
                seq: i as u64 + 1,
                source: "sidecar \"quoted\"".into(),
                prev_hash: [i as u8; 32],
                hash: [0xab; 32],
                body: (*body).to_owned(),
            }
            .write_line(&mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), bodies.len(), "{text}");
        for (i, (line, body)) in lines.iter().zip(bodies).enumerate() {
            let parsed: AuditExportLine = serde_json::from_str(line).unwrap();
            let expected = AuditExportLine {
                seq: i as u64 + 1,
                source: "sidecar \"quoted\"".into(),
                prev_hash: hex::encode([i as u8; 32]),
                hash: hex::encode([0xab; 32]),
                entry: serde_json::from_str(body)
                    .unwrap_or(serde_json::Value::String(body.to_owned())),
            };
            assert_eq!(parsed, expected, "{line}");
        }
        assert!(
            lines[0].ends_with(&format!("\"entry\":{}}}", bodies[0])),
            "written as held"
        );
    }

    /// `verify` walks every row; it used to hold the reader's one connection for the whole
    /// walk, so every list, stat and export waited on it. Here the shared connection is held
    /// by the test while verify runs: verify finishes only if it does not need it.
    #[test]
    fn verify_runs_while_the_shared_read_connection_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path());
        runtime().block_on(async {
            for i in 0..20 {
                log.append(decision(&format!("read:x/{i}"))).await.unwrap();
            }
            log.checkpoint().await.unwrap();
        });
        let reader = log.reader();
        reader.wait_indexed(Duration::from_secs(60));
        let (vkey, origin) = (log.vkey().to_owned(), log.origin().to_owned());
        let (tx, rx) = std::sync::mpsc::channel();
        let busy = reader.conn.lock().unwrap();
        let walker = std::sync::Arc::clone(&reader);
        std::thread::spawn(move || {
            let _ = tx.send(walker.verify(&vkey, &origin).map(|r| (r.valid, r.entries)));
        });
        let report = rx.recv_timeout(Duration::from_secs(60));
        drop(busy);
        let (valid, entries) = report
            .expect("verify finished while the shared connection was held")
            .unwrap();
        assert!(valid);
        assert_eq!(entries, 20);
    }
}
