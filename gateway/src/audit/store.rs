//! SQLite side of the audit log: the writer's connection (append, ingest, checkpoint) and a
//! reader connection for queries, stats, export and verification.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine;
use meshguard_api::{AuditEntry, AuditExportLine, AuditRecord};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::merkle::{self, Frontier};
use super::note::{self, LogKey};
use super::{GENESIS, IngestReport, canonical, chain_hash};

/// A connection to the log's database (WAL, synchronous=FULL).
pub(crate) fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    open(path)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// The WAL file of the database at `db`, which the syncer fsyncs: SQLite appends to it with
/// `synchronous=NORMAL` on the writer's connection (no fsync inside COMMIT), and nothing the
/// writer commits is acknowledged before a sync of this file that started after the commit.
#[derive(Debug, Clone)]
pub(crate) struct Wal(PathBuf);

impl Wal {
    pub(crate) fn of(db: &Path) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        Self(PathBuf::from(name))
    }

    /// Makes everything written to the WAL so far durable. Opened afresh each time, so the
    /// sync always reaches the file SQLite is writing now.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .read(true)
            .open(&self.0)?
            .sync_data()
    }
}

/// The frontier and chain heads kept with the latest checkpoint, if they can be trusted: the
/// frontier's root must be the root the log key signed at that size, and this gateway's head
/// must be the hash of its last row at or below that size. Anything else is reported and the
/// caller replays the whole log instead.
fn anchor(
    conn: &Connection,
    origin: &str,
    vkey: &str,
) -> rusqlite::Result<Option<(Frontier, HashMap<String, String>)>> {
    let latest: Option<(i64, Vec<u8>, String, String)> = conn
        .query_row(
            "SELECT size, frontier, heads, note FROM audit_checkpoints
             WHERE frontier IS NOT NULL AND heads IS NOT NULL ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((size, bytes, heads, note_text)) = latest else {
        return Ok(None);
    };
    let size = size as u64;
    let distrust = |why: &str| {
        tracing::warn!(
            size,
            why,
            "the audit checkpoint's saved frontier is not used; replaying the whole log"
        );
        Ok(None)
    };
    let Some(frontier) = Frontier::from_bytes(size, &bytes) else {
        return distrust("its frontier does not fit its size");
    };
    match note::verify_checkpoint(vkey, &note_text) {
        Ok(cp) if cp.size == size && cp.root == frontier.root() => {}
        Ok(_) => return distrust("its frontier does not give the signed root"),
        Err(e) => return distrust(&format!("its note does not verify: {e}")),
    }
    let Ok(heads) = serde_json::from_str::<HashMap<String, String>>(&heads) else {
        return distrust("its chain heads are not a JSON map");
    };
    let own: Option<String> = conn
        .query_row(
            "SELECT hash FROM audit_entries WHERE seq <= ?1 AND source = ?2 ORDER BY seq DESC LIMIT 1",
            params![size as i64, origin],
            |r| r.get(0),
        )
        .optional()?;
    if own != heads.get(origin).cloned() {
        return distrust("its chain head for this gateway is not the hash of its last row");
    }
    Ok(Some((frontier, heads)))
}

/// Leaves per saved subtree hash (`audit_tiles`), as a height.
const TILE_HEIGHT: u32 = 8;
const TILE: u64 = 1 << TILE_HEIGHT;

/// Appends `leaf` to `frontier`, noting in `tiles` the tile (start leaf, subtree hash) it
/// completes, if it completes one.
fn push_leaf(frontier: &mut Frontier, leaf: merkle::Hash, tiles: &mut Vec<(u64, merkle::Hash)>) {
    let end = frontier.size() + 1;
    frontier.push_and_see(leaf, |height, hash| {
        if height == TILE_HEIGHT {
            tiles.push((end - TILE, *hash));
        }
    });
}

/// `frontier` with `leaves` appended, and the tiles they complete.
fn grow(frontier: &Frontier, leaves: &[merkle::Hash]) -> (Frontier, Vec<(u64, merkle::Hash)>) {
    let mut grown = frontier.clone();
    let mut tiles = Vec::new();
    for leaf in leaves {
        push_leaf(&mut grown, *leaf, &mut tiles);
    }
    (grown, tiles)
}

/// Saves tile hashes in the current transaction.
fn save_tiles(conn: &Connection, tiles: &[(u64, merkle::Hash)]) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("INSERT OR REPLACE INTO audit_tiles (start, hash) VALUES (?1, ?2)")?;
    for (start, hash) in tiles {
        stmt.execute(params![*start as i64, &hash[..]])?;
    }
    Ok(())
}

/// Rows of this gateway's chain inserted in the writer's open transaction.
struct Open {
    /// The chain head after the last of them.
    head: String,
    leaves: Vec<merkle::Hash>,
}

/// The writer's state: its connection, the Merkle frontier and the head of every chain.
pub(crate) struct Writer {
    conn: Connection,
    wal: Wal,
    open: Option<Open>,
    origin: String,
    frontier: Frontier,
    heads: HashMap<String, String>,
    signed_size: u64,
    /// The highest seq known to be on disk; readers show nothing beyond it.
    durable: Arc<AtomicU64>,
}

/// The highest seq in the log: at start, and after an inline sync with nothing open, every row
/// is on disk.
fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_entries", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|s| s.max(0) as u64)
}

impl Writer {
    /// Opens the log and rebuilds the frontier and chain heads: from the latest checkpoint that
    /// kept them (once its frontier is found to match the root the log key signed), replaying
    /// only the rows after it; from the first row otherwise.
    pub(crate) fn open(path: &Path, origin: &str, vkey: &str) -> anyhow::Result<Self> {
        let conn = open(path)?;
        // COMMIT writes the frames without waiting for the disk; the syncer thread fsyncs the
        // WAL while this thread already inserts the next batch, and only then releases the
        // batch's requests (group commit with a separate flush). SQLite keeps the file
        // consistent in this mode; durability of every acknowledged row comes from the
        // syncer. Ingests and checkpoints sync inline before they answer.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let (mut frontier, mut heads) = anchor(&conn, origin, vkey)?.unwrap_or_default();
        let mut replayed_tiles = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT seq, source, body, hash FROM audit_entries WHERE seq > ?1 ORDER BY seq",
            )?;
            let mut rows = stmt.query([frontier.size() as i64])?;
            let mut expected = frontier.size() + 1;
            while let Some(r) = rows.next()? {
                let (seq, source, body, hash): (i64, String, String, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                if seq as u64 != expected {
                    tracing::error!(
                        missing = expected,
                        seq,
                        "the audit log has a gap (rows were removed); GET /admin/audit/verify names it"
                    );
                }
                expected = seq as u64 + 1;
                push_leaf(
                    &mut frontier,
                    merkle::leaf_hash(body.as_bytes()),
                    &mut replayed_tiles,
                );
                heads.insert(source, hash);
            }
        }
        // Tiles of a log written before they were kept (or lost since) are saved now, so
        // proofs stop reading every entry after the first start.
        if !replayed_tiles.is_empty() {
            let tx = conn.unchecked_transaction()?;
            save_tiles(&tx, &replayed_tiles)?;
            tx.commit()?;
        }
        let signed_size: u64 = conn
            .query_row(
                "SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints",
                [],
                |r| r.get::<_, i64>(0),
            )?
            .try_into()
            .unwrap_or(0);
        let durable = Arc::new(AtomicU64::new(last_seq(&conn)?));
        Ok(Self {
            conn,
            wal: Wal::of(path),
            open: None,
            origin: origin.to_owned(),
            frontier,
            heads,
            signed_size,
            durable,
        })
    }

    /// The highest seq on disk, shared with the readers and the syncer (which raises it).
    pub(crate) fn durable(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
    }

    /// After an inline sync with no transaction open: everything in the log is on disk.
    fn synced_all(&self) -> rusqlite::Result<()> {
        self.durable
            .fetch_max(last_seq(&self.conn)?, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn wal(&self) -> Wal {
        self.wal.clone()
    }

    pub(crate) fn unsigned_rows(&self) -> u64 {
        self.frontier.size() - self.signed_size
    }

    /// Inserts an entry of this gateway's own chain into the open transaction, opening one if
    /// none is; returns its seq. Nothing is visible to the frontier or the chain heads before
    /// [`Self::commit`].
    pub(crate) fn insert(&mut self, prepared: &super::Prepared) -> rusqlite::Result<u64> {
        if self.open.is_none() {
            self.conn.execute_batch("BEGIN")?;
            let head = self
                .heads
                .get(&self.origin)
                .cloned()
                .unwrap_or_else(|| GENESIS.to_owned());
            self.open = Some(Open {
                head,
                leaves: Vec::new(),
            });
        }
        let open = self.open.as_mut().expect("opened above");
        let (entry, body) = (&prepared.entry, &prepared.body);
        let hash = chain_hash(&open.head, body).expect("heads are 32-byte hex");
        self.conn
            .prepare_cached(
                "INSERT INTO audit_entries (id, source, timestamp, agent_id, action, decision, body, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                entry.id,
                self.origin,
                entry.timestamp,
                entry.agent_id,
                entry.action,
                entry.decision,
                body,
                open.head,
                hash
            ])?;
        open.leaves.push(prepared.leaf);
        open.head = hash;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Commits the open transaction: its frames reach the WAL (not yet the disk; see [`Wal`])
    /// and its rows join the frontier and the chain head. On failure nothing of it remains.
    pub(crate) fn commit(&mut self) -> rusqlite::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let (grown, tiles) = grow(&self.frontier, &open.leaves);
        if let Err(e) =
            save_tiles(&self.conn, &tiles).and_then(|()| self.conn.execute_batch("COMMIT"))
        {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        self.frontier = grown;
        self.heads.insert(self.origin.clone(), open.head);
        Ok(())
    }

    /// Drops the open transaction and every row in it.
    pub(crate) fn rollback(&mut self) {
        if self.open.take().is_some()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "cannot roll back the audit writer's transaction");
        }
    }

    /// Merges a sidecar's export: all lines or none. Lines already present (same id and hash) are
    /// skipped, so ingesting the same export twice changes nothing.
    pub(crate) fn ingest(&mut self, lines: &[AuditExportLine]) -> Result<IngestReport, String> {
        debug_assert!(self.open.is_none(), "the open batch is committed first");
        let mut report = IngestReport {
            received: lines.len(),
            ..Default::default()
        };
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut heads = self.heads.clone();
        let mut leaves = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let at = format!("line {}", i + 1);
            if line.source == self.origin {
                return Err(format!(
                    "{at}: source {:?} is this gateway's own log; only other sources can be ingested",
                    line.source
                ));
            }
            let body = canonical(&line.entry);
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
            let existing: Option<String> = tx
                .query_row("SELECT hash FROM audit_entries WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| e.to_string())?;
            match existing {
                Some(h) if h == line.hash => {
                    report.duplicates += 1;
                    continue;
                }
                Some(_) => {
                    return Err(format!(
                        "{at}: entry {id} is already in the log with different content"
                    ));
                }
                None => {}
            }
            let head = heads.get(&line.source).map_or(GENESIS, String::as_str);
            if line.prev_hash != head {
                return Err(format!(
                    "{at}: entry {id} does not follow the last entry held for source {:?} (expected prevHash {head}); ingest the export from the start, or from the entry after it",
                    line.source
                ));
            }
            let text = |k: &str| line.entry.get(k).and_then(Value::as_str).map(str::to_owned);
            tx.execute(
                "INSERT INTO audit_entries (id, source, timestamp, agent_id, action, decision, body, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    line.source,
                    text("timestamp").unwrap_or_default(),
                    text("agentId"),
                    text("action").unwrap_or_default(),
                    text("decision").unwrap_or_default(),
                    body,
                    line.prev_hash,
                    line.hash
                ],
            )
            .map_err(|e| e.to_string())?;
            heads.insert(line.source.clone(), line.hash.clone());
            leaves.push(merkle::leaf_hash(body.as_bytes()));
            report.inserted += 1;
        }
        let (grown, tiles) = grow(&self.frontier, &leaves);
        save_tiles(&tx, &tiles).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        self.frontier = grown;
        self.heads = heads;
        self.wal
            .sync()
            .map_err(|e| format!("the ingested entries could not be made durable: {e}"))?;
        self.synced_all().map_err(|e| e.to_string())?;
        Ok(report)
    }

    /// Signs a checkpoint over the whole log if it grew; returns the latest checkpoint note.
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

    /// Appends the rotation entry `prepared` and, in the same transaction, the checkpoint over
    /// it signed by `new` and `old` (when there is one), retires `old_vkey` at that size and
    /// records `new`; then makes it durable. Returns the checkpoint's size and note.
    pub(crate) fn rotate(
        &mut self,
        prepared: &super::Prepared,
        new: &LogKey,
        old: Option<&LogKey>,
        old_vkey: Option<&str>,
    ) -> anyhow::Result<(u64, String)> {
        debug_assert!(self.open.is_none(), "no batch is open in a rotation");
        self.insert(prepared)?;
        let open = self.open.take().expect("insert opened a transaction");
        let (grown, tiles) = grow(&self.frontier, &open.leaves);
        let mut heads = self.heads.clone();
        heads.insert(self.origin.clone(), open.head);
        let (size, root) = (grown.size(), grown.root());
        let mut signers = vec![new];
        signers.extend(old);
        let text =
            match note::sign_note_by(&note::checkpoint_body(new.origin(), size, &root), &signers) {
                Ok(text) => text,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    anyhow::bail!("cannot sign the handoff checkpoint: {e}");
                }
            };
        let now = crate::clock::now_rfc3339();
        let written = (|| -> rusqlite::Result<()> {
            save_tiles(&self.conn, &tiles)?;
            self.conn.execute(
                "INSERT INTO audit_checkpoints (size, root, note, created_at, frontier, heads) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    size as i64,
                    base64::engine::general_purpose::STANDARD.encode(root),
                    text,
                    now,
                    grown.to_bytes(),
                    serde_json::to_string(&heads).expect("a map of strings serializes")
                ],
            )?;
            if let Some(old_vkey) = old_vkey {
                self.conn.execute(
                    "UPDATE audit_keys SET retired_size = ?1, retired_at = ?2 WHERE vkey = ?3",
                    params![size as i64, now, old_vkey],
                )?;
            }
            self.conn.execute(
                "INSERT INTO audit_keys (vkey, first_size, added_at) VALUES (?1, ?2, ?3)",
                params![new.vkey(), size as i64, now],
            )?;
            self.conn.execute_batch("COMMIT")
        })();
        if let Err(e) = written {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        self.frontier = grown;
        self.heads = heads;
        self.signed_size = size;
        self.wal
            .sync()
            .context("the rotation is committed but could not be made durable")?;
        self.synced_all()?;
        Ok((size, text))
    }

    pub(crate) fn checkpoint(&mut self, key: &LogKey) -> anyhow::Result<Option<String>> {
        debug_assert!(self.open.is_none(), "the open batch is committed first");
        if self.frontier.size() > self.signed_size {
            // Never sign rows that a power cut could still take away.
            self.wal
                .sync()
                .context("cannot make the log durable before signing a checkpoint")?;
            self.synced_all()?;
            let size = self.frontier.size();
            let root = self.frontier.root();
            let note = key
                .sign_note(&note::checkpoint_body(key.origin(), size, &root))
                .map_err(|e| anyhow::anyhow!("cannot sign a checkpoint: {e}"))?;
            self.conn.execute(
                "INSERT INTO audit_checkpoints (size, root, note, created_at, frontier, heads) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    size as i64,
                    base64::engine::general_purpose::STANDARD.encode(root),
                    note,
                    crate::clock::now_rfc3339(),
                    self.frontier.to_bytes(),
                    serde_json::to_string(&self.heads).expect("a map of strings serializes")
                ],
            )?;
            self.signed_size = size;
            self.wal
                .sync()
                .context("cannot make the signed checkpoint durable")?;
        }
        Ok(self
            .conn
            .query_row(
                "SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
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
    durable: Arc<AtomicU64>,
}

fn record(seq: i64, source: String, body: &str, hash: String) -> rusqlite::Result<AuditRecord> {
    let entry: AuditEntry = serde_json::from_str(body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(AuditRecord {
        entry,
        seq: seq as u64,
        source,
        hash,
    })
}

/// The leaf hashes of `count` entries from leaf `start` (leaf `i` is the entry with seq `i + 1`).
fn leaf_hashes(c: &Connection, start: u64, count: u64) -> rusqlite::Result<Vec<merkle::Hash>> {
    let mut stmt = c.prepare_cached(
        "SELECT body FROM audit_entries WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
    )?;
    let hashes = stmt
        .query_map(params![start as i64, (start + count) as i64], |r| {
            Ok(merkle::leaf_hash(r.get::<_, String>(0)?.as_bytes()))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if hashes.len() as u64 != count {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!(
                "audit entries {}..={} are not all in the log; run /admin/audit/verify",
                start + 1,
                start + count
            )
            .into(),
        ));
    }
    Ok(hashes)
}

/// The hash of the complete subtree of `2^height` leaves from leaf `start`: from the saved
/// tiles where they cover it, else from the entries themselves.
fn complete(c: &Connection, start: u64, height: u32) -> rusqlite::Result<merkle::Hash> {
    let count = 1u64 << height;
    if height < TILE_HEIGHT || !start.is_multiple_of(TILE) {
        return Ok(merkle::root_of(&leaf_hashes(c, start, count)?));
    }
    let saved: HashMap<u64, merkle::Hash> = c
        .prepare_cached("SELECT start, hash FROM audit_tiles WHERE start >= ?1 AND start < ?2")?
        .query_map(params![start as i64, (start + count) as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })?
        .filter_map(|row| match row {
            Ok((s, h)) => h.try_into().ok().map(|h| Ok((s, h))),
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<_>>()?;
    let tiles = (0..count / TILE)
        .map(|i| {
            let at = start + i * TILE;
            match saved.get(&at) {
                Some(h) => Ok(*h),
                None => Ok(merkle::root_of(&leaf_hashes(c, at, TILE)?)),
            }
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(merkle::root_of(&tiles))
}

/// `2026-01-01` means the start of that day; anything else is taken as a timestamp.
fn bound(date: &str, end: bool) -> String {
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
    pub(crate) fn open(path: &Path, durable: Arc<AtomicU64>) -> rusqlite::Result<Self> {
        Ok(Self {
            conn: Mutex::new(open(path)?),
            durable,
        })
    }

    fn durable(&self) -> i64 {
        i64::try_from(self.durable.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
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
            let mut stmt = c.prepare_cached(
                "SELECT seq, source, body, hash FROM audit_entries
                 WHERE (?1 IS NULL OR decision = ?1)
                   AND (?2 IS NULL OR timestamp >= ?2)
                   AND (?3 IS NULL OR timestamp <= ?3)
                   AND (?4 IS NULL OR agent_id = ?4 OR json_extract(body, '$.agentName') = ?4)
                   AND (?5 IS NULL OR action = ?5)
                   AND (?6 IS NULL OR json_extract(body, '$.traceId') = ?6)
                   AND seq <= ?8
                 ORDER BY seq DESC LIMIT ?7",
            )?;
            let rows = stmt.query_map(
                params![
                    q.decision,
                    q.from.as_deref().map(|d| bound(d, false)),
                    q.to.as_deref().map(|d| bound(d, true)),
                    q.agent,
                    q.action,
                    q.trace_id,
                    q.limit as i64,
                    self.durable()
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )?;
            rows.map(|r| r.and_then(|(seq, source, body, hash)| record(seq, source, &body, hash)))
                .collect()
        })
    }

    /// `(total, allowed, denied, top denied actions)` since `since`.
    pub(crate) fn stats(&self, since: &str) -> rusqlite::Result<Stats> {
        self.with(|c| {
            let (total, allowed, denied) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(decision = 'allow'), 0), COALESCE(SUM(decision = 'deny'), 0)
                 FROM audit_entries WHERE timestamp >= ?1 AND seq <= ?2",
                params![since, self.durable()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT action, COUNT(*) AS n FROM audit_entries
                 WHERE timestamp >= ?1 AND decision = 'deny' AND seq <= ?2
                 GROUP BY action ORDER BY n DESC, action LIMIT 10",
            )?;
            let top = stmt
                .query_map(params![since, self.durable()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
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
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, source, prev_hash, hash, body FROM audit_entries
                 WHERE (?1 IS NULL OR source = ?1) AND seq > ?2 AND seq <= ?4
                 ORDER BY seq LIMIT ?3",
            )?;
            let params = params![source, after as i64, limit as i64, self.durable()];
            let rows = stmt.query_map(params, |r| {
                let body: String = r.get(4)?;
                Ok(AuditExportLine {
                    seq: r.get::<_, i64>(0)? as u64,
                    source: r.get(1)?,
                    prev_hash: r.get(2)?,
                    hash: r.get(3)?,
                    entry: serde_json::from_str(&body).unwrap_or(Value::String(body)),
                })
            })?;
            rows.collect()
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
            c.query_row("SELECT seq FROM audit_entries WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|s| s.map(|s| s as u64))
        })
    }

    /// The leaf hash of the entry at leaf `index` and its audit path in the tree of `size`.
    pub(crate) fn inclusion(
        &self,
        index: u64,
        size: u64,
    ) -> rusqlite::Result<(merkle::Hash, Vec<merkle::Hash>)> {
        self.with(|c| {
            let leaf = leaf_hashes(c, index, 1)?[0];
            let mut mth = |lo, hi| merkle::range_root(lo, hi, &mut |s, h| complete(c, s, h));
            Ok((leaf, merkle::inclusion_proof_with(index, size, &mut mth)?))
        })
    }

    /// How many entries are durable.
    pub(crate) fn durable_size(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// The root of the tree of the first `size` entries (from the stored tiles), with `size`
    /// no larger than the durable log.
    pub(crate) fn root_at(&self, size: u64) -> rusqlite::Result<merkle::Hash> {
        self.with(|c| merkle::range_root(0, size, &mut |s, h| complete(c, s, h)))
    }

    /// The leaf hashes of every entry ingested from `source`, in log order: the tree of that
    /// source's own log, which its signed checkpoints cover.
    pub(crate) fn source_leaves(&self, source: &str) -> rusqlite::Result<Vec<merkle::Hash>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT body FROM audit_entries WHERE source = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([source], |r| r.get::<_, String>(0))?;
            rows.map(|b| b.map(|b| merkle::leaf_hash(b.as_bytes())))
                .collect()
        })
    }

    /// The consistency proof from the tree of `m` leaves to the tree of `size`, and the root of
    /// the first `m` leaves.
    pub(crate) fn consistency(
        &self,
        m: u64,
        size: u64,
    ) -> rusqlite::Result<(Vec<merkle::Hash>, merkle::Hash)> {
        self.with(|c| {
            let mut complete = |s, h| complete(c, s, h);
            let old_root = merkle::range_root(0, m, &mut complete)?;
            let mut mth = |lo, hi| merkle::range_root(lo, hi, &mut complete);
            Ok((merkle::consistency_proof_with(m, size, &mut mth)?, old_root))
        })
    }

    /// Recomputes every chain, every leaf and every checkpoint; names the first bad row.
    pub(crate) fn verify(&self, vkey: &str, origin: &str) -> rusqlite::Result<VerifyReport> {
        self.with(|c| {
            let mut keys = super::keys::records(c)?;
            if keys.is_empty() {
                keys.push(super::keys::KeyRecord {
                    vkey: vkey.to_owned(),
                    first_size: 0,
                    retired_size: None,
                });
            }
            let mut checkpoints: Vec<(u64, String)> = {
                let mut stmt = c.prepare("SELECT size, note FROM audit_checkpoints ORDER BY size")?;
                stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let total_checkpoints = checkpoints.len();
            let latest = checkpoints.last().map(|(s, _)| *s);
            checkpoints.reverse();
            let mut report = VerifyReport {
                valid: true,
                entries: 0,
                sources: 0,
                checkpoints: total_checkpoints,
                latest_checkpoint_size: latest,
                first_bad: None,
            };
            let fail = |report: &mut VerifyReport, seq: Option<u64>, id: Option<String>, problem: String| {
                if report.first_bad.is_none() {
                    report.valid = false;
                    report.first_bad = Some(BadRow { seq, id, problem });
                }
            };
            let check_checkpoint = |size: u64, note_text: &str, root: &merkle::Hash| -> Result<(), String> {
                // The key of the checkpoint's range; at a rotation's handoff, either key.
                let mut problems = Vec::new();
                let mut verified = None;
                for k in keys.iter().filter(|k| k.covers(size)) {
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
                        format!("checkpoint at size {size}: no key of this log signs checkpoints of that size")
                    } else {
                        format!("checkpoint at size {size}: {}", problems.join("; "))
                    }
                })?;
                if cp.origin != origin || cp.size != size {
                    return Err(format!("checkpoint at size {size} names origin {} size {}", cp.origin, cp.size));
                }
                if &cp.root != root {
                    return Err(format!("the log's first {size} entries no longer hash to the signed checkpoint root; an entry was altered, removed or inserted"));
                }
                Ok(())
            };
            let mut heads: HashMap<String, String> = HashMap::new();
            let mut frontier = Frontier::default();
            let mut expected_seq = 1u64;
            let mut stmt = c.prepare("SELECT seq, id, source, body, prev_hash, hash FROM audit_entries ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let seq = r.get::<_, i64>(0)? as u64;
                let (id, source, body, prev, hash): (String, String, String, String, String) =
                    (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                report.entries += 1;
                if seq != expected_seq {
                    fail(&mut report, Some(seq), Some(id.clone()), format!("row {expected_seq} is missing (the log jumps to {seq})"));
                }
                expected_seq = seq + 1;
                let head = heads.get(&source).map_or(GENESIS, String::as_str);
                if prev != head {
                    fail(&mut report, Some(seq), Some(id.clone()), format!("does not link to the previous entry of source {source:?}"));
                }
                if chain_hash(&prev, &body).as_deref() != Some(hash.as_str()) {
                    fail(&mut report, Some(seq), Some(id.clone()), "its content does not match its hash; the row was altered".into());
                }
                if serde_json::from_str::<Value>(&body).ok().and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned)).as_deref()
                    != Some(id.as_str())
                {
                    fail(&mut report, Some(seq), Some(id.clone()), "the id column does not match the entry".into());
                }
                heads.insert(source, hash);
                frontier.push(merkle::leaf_hash(body.as_bytes()));
                while let Some((size, _)) = checkpoints.last() {
                    if *size != frontier.size() {
                        break;
                    }
                    let (size, note_text) = checkpoints.pop().expect("peeked");
                    if let Err(problem) = check_checkpoint(size, &note_text, &frontier.root()) {
                        fail(&mut report, Some(seq), None, problem);
                    }
                }
            }
            if let Some((size, _)) = checkpoints.last() {
                fail(
                    &mut report,
                    None,
                    None,
                    format!("a signed checkpoint covers {size} entries but the log holds only {}; entries were removed", frontier.size()),
                );
            }
            report.sources = heads.len();
            Ok(report)
        })
    }
}
