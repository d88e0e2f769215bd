//! The tamper-evident audit log: every decision is an entry of an append-only log in the
//! C2SP tlog-tiles layout (`tiles`), acknowledged only once it is durable.
//!
//! Four threads. The writer chains each entry and appends it to the open group; whenever the
//! syncer is free it writes the group to the staging bundle and hands it over. The syncer
//! makes the group durable with one `fdatasync` and only then answers its requests, while the
//! writer already fills the next group. The indexer puts the durable entries into SQLite, the
//! log's index. The publisher writes the checkpoints the writer signs once the entries they
//! cover are durable. A failed sync refuses the waiting requests and stops the log (every
//! later decision fails closed in enforce mode). Each entry's hash chains to the previous
//! entry of the same source (this gateway, or a sidecar whose export was ingested), and every
//! entry is a leaf of an RFC 6962 Merkle tree whose root the writer signs as a C2SP
//! checkpoint.

pub(crate) mod bound;
pub(crate) mod keys;
pub(crate) mod note;
mod store;

pub(crate) use meshguard_tlog::{merkle, tiles};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use meshguard_api::{AuditEntry, AuditExportLine};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub(crate) use store::{AuditQuery, Cosignature, IndexedEntry, Reader, Writer, bound};

/// A connection to the database the log's records are in (for the benchmarks' set-up).
pub(crate) fn store_conn(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    store::open_conn(path)
}

use note::LogKey;

/// The chain's starting point: 32 zero bytes, in hex.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Canonical JSON of an entry (`meshguard_common::canonical`: sorted keys, no whitespace;
/// floats an agent sent in `meta` kept in serde_json's spelling, as every entry was hashed).
pub(crate) fn canonical(value: &Value) -> String {
    meshguard_common::canonical::value_to_string(
        value,
        meshguard_common::canonical::Floats::Shortest,
    )
    .expect("floats are written, never refused")
}

/// `hex(SHA-256(prev ‖ body))`, with `prev` as raw bytes.
pub(crate) fn chain_hash(prev_hex: &str, body: &str) -> Option<String> {
    // Into fixed buffers: `hex::encode`/`decode` build their results a character at a time,
    // which showed up in the writer's profile once per row.
    let mut prev = [0u8; 32];
    hex::decode_to_slice(prev_hex, &mut prev).ok()?;
    let mut out = [0u8; 64];
    hex::encode_to_slice(chain_link(&prev, body), &mut out).expect("64 hex digits for 32 bytes");
    Some(String::from_utf8(out.to_vec()).expect("hex digits are ASCII"))
}

/// `SHA-256(prev ‖ body)`: the chain hash as bytes, as the writer links its own entries.
pub(crate) fn chain_link(prev: &merkle::Hash, body: &str) -> merkle::Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body.as_bytes());
    h.finalize().into()
}

/// Settings for the log.
#[derive(Debug, Clone)]
pub(crate) struct AuditConfig {
    pub(crate) db_path: PathBuf,
    /// The log itself (`tiles`); the database at `db_path` keeps its index.
    pub(crate) log_dir: PathBuf,
    pub(crate) key: keys::KeySource,
    pub(crate) origin: String,
    /// Sign a checkpoint after this many new rows…
    pub(crate) checkpoint_every: u64,
    /// …or this long after the last one, whichever comes first.
    pub(crate) checkpoint_interval: Duration,
    /// Applied to every entry before it is written (`AUDIT_REDACTION`).
    pub(crate) redaction: crate::redaction::Redaction,
}

#[derive(Debug)]
enum Job {
    Append(Box<Prepared>, Ack),
    Ingest(
        Vec<AuditExportLine>,
        oneshot::Sender<Result<IngestReport, String>>,
    ),
    Checkpoint(oneshot::Sender<Result<Option<String>, String>>),
    Cosign(Vec<Cosignature>, oneshot::Sender<Result<usize, String>>),
    /// From the syncer: the last committed batch is durable.
    Synced,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IngestReport {
    pub(crate) received: usize,
    pub(crate) inserted: usize,
    pub(crate) duplicates: usize,
}

/// Handle to the writer; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AuditLog {
    tx: SyncSender<Job>,
    origin: Arc<str>,
    vkey: Arc<str>,
    reader: Arc<store::Reader>,
    /// The same key, for the checkpoint a sidecar sends with its heartbeat.
    key: Arc<LogKey>,
    /// Decisions are not recorded: only for measuring what the audit costs
    /// (`bench_support::prepare_unaudited`); no setting of the gateway turns it on.
    discard: bool,
    redaction: crate::redaction::Redaction,
    /// What the writer and the syncer share: whether a failed sync stopped the log.
    shared: Arc<Shared>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error("the audit log is not accepting entries (its writer stopped); see the gateway log")]
    Stopped,
    #[error("the audit log queue is full; the gateway is overloaded")]
    Full,
    #[error("{0}")]
    Write(String),
}

impl AuditLog {
    /// Opens the log (creating the key on first start) and starts the writer thread.
    pub(crate) fn open(config: AuditConfig) -> anyhow::Result<Self> {
        let key = {
            let conn = store::open_conn(&config.db_path)?;
            keys::open_signing_key(&conn, &config.key, &config.origin)?
        };
        let vkey: Arc<str> = key.vkey().into();
        let signer = Arc::new(key.clone());
        let mut writer =
            store::Writer::open(&config.db_path, &config.log_dir, &config.origin, &vkey)?;
        let reader = Arc::new(store::Reader::open(
            &config.db_path,
            &config.log_dir,
            writer.durable(),
            writer.indexed(),
        )?);
        let (tx, rx) = sync_channel::<Job>(65_536);
        let (acks, committed) = sync_channel::<Batch>(16);
        let (to_index, index_rx) = std::sync::mpsc::channel::<Vec<store::IndexRow>>();
        let origin: Arc<str> = config.origin.clone().into();
        let redaction = config.redaction;
        let shared = Arc::new(Shared {
            syncing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            synced_at: std::sync::Mutex::new(writer.position()),
        });
        let mut indexer = store::Indexer::open(
            &config.db_path,
            &config.log_dir,
            &config.origin,
            writer.indexed(),
        )?;
        let log_size = writer.durable().load(Ordering::SeqCst);
        let (to_publish, publish_rx) = std::sync::mpsc::channel::<Publish>();
        let publisher = Publisher {
            conn: store::open_conn(&config.db_path)?,
            durable: writer.durable(),
            shared: Arc::clone(&shared),
        };
        std::thread::Builder::new()
            .name("audit-publish".into())
            .spawn(move || publisher.run(publish_rx))?;
        std::thread::Builder::new()
            .name("audit-index".into())
            .spawn(move || indexer.run(log_size, index_rx))?;
        let syncer = Syncer {
            dir: writer.log_dir(),
            durable: writer.durable(),
            shared: Arc::clone(&shared),
            wake: tx.clone(),
            to_index: to_index.clone(),
        };
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run(committed))?;
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let to = Downstream {
                    acks,
                    index: to_index,
                    publish: to_publish,
                };
                writer.run(rx, &to, &writer_shared, &key, &config);
            })?;
        Ok(Self {
            tx,
            origin,
            vkey,
            reader,
            key: signer,
            discard: false,
            redaction,
            shared,
        })
    }

    /// Whether a failed write or sync stopped the log: no decision is recorded (every one fails
    /// closed) until the gateway restarts, which `/health` then asks for.
    pub(crate) fn stopped(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// This log, recording nothing (see `discard`).
    pub(crate) fn discarding(self) -> Self {
        Self {
            discard: true,
            ..self
        }
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    pub(crate) fn key(&self) -> &LogKey {
        &self.key
    }

    pub(crate) fn vkey(&self) -> &str {
        &self.vkey
    }

    pub(crate) fn reader(&self) -> Arc<store::Reader> {
        Arc::clone(&self.reader)
    }

    /// Queues `entry` and resolves once it is durable, with its sequence number.
    pub(crate) async fn append(&self, entry: AuditEntry) -> Result<u64, AuditError> {
        self.queue(entry)?.durable().await
    }

    /// Queues `entry` for the writer. The caller may withdraw it ([`Queued::withdraw`]) as
    /// long as the writer has not taken it; a withdrawn entry is never written.
    pub(crate) fn queue(&self, mut entry: AuditEntry) -> Result<Queued, AuditError> {
        self.redaction.apply(&mut entry);
        let (done, wait) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        if self.discard {
            let _ = done.send(Ok(0));
            return Ok(Queued { claim, wait });
        }
        // Serialized and leaf-hashed here, on the request's own worker, so the single writer
        // thread only chains, inserts and commits.
        let mut prepared = Box::new(Prepared::new(entry));
        prepared.claim = Arc::clone(&claim);
        match self.tx.try_send(Job::Append(prepared, done)) {
            Ok(()) => Ok(Queued { claim, wait }),
            Err(TrySendError::Full(_)) => Err(AuditError::Full),
            Err(TrySendError::Disconnected(_)) => Err(AuditError::Stopped),
        }
    }

    pub(crate) async fn ingest(
        &self,
        lines: Vec<AuditExportLine>,
    ) -> Result<IngestReport, AuditError> {
        self.index_caught_up(Duration::from_secs(60)).await?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Ingest(lines, done))
            .map_err(|_| AuditError::Stopped)?;
        wait.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Waits, up to `within`, until the index holds every entry durable now. The writer looks
    /// an ingest's duplicates up in the index; waiting here, not on the writer thread that
    /// every decision waits on, keeps decisions flowing while the index is filled from the log
    /// (after an upgrade, or a lost index: minutes on a large log).
    async fn index_caught_up(&self, within: Duration) -> Result<(), AuditError> {
        let reader = self.reader();
        let lacking = tokio::task::spawn_blocking(move || reader.wait_indexed(within))
            .await
            .map_err(|_| AuditError::Stopped)?;
        if lacking > 0 {
            return Err(AuditError::Write(format!(
                "the audit index lacks {lacking} of the log's entries and did not catch up within {} s (it is being filled from the log); try again later",
                within.as_secs()
            )));
        }
        Ok(())
    }

    /// Stores verified witness cosignatures (the witness proof cache); returns how many were new.
    pub(crate) async fn add_cosignatures(
        &self,
        rows: Vec<Cosignature>,
    ) -> Result<usize, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Cosign(rows, done))
            .map_err(|_| AuditError::Stopped)?;
        wait.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Signs a checkpoint now (if the log grew since the last one) and returns the latest note.
    pub(crate) async fn checkpoint(&self) -> Result<Option<String>, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Checkpoint(done))
            .map_err(|_| AuditError::Stopped)?;
        wait.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }
}

/// An entry ready for the writer: its canonical body and Merkle leaf hash, computed off the
/// writer thread, and its index row's fields, moved out of the entry (the writer places it).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) row: store::IndexRow,
    pub(crate) body: String,
    pub(crate) leaf: merkle::Hash,
    /// Who has the entry: still queued, taken by the writer, or withdrawn by its caller.
    claim: Arc<Claim>,
}

impl Prepared {
    /// Bounds the entry first (see `bound`): every entry this gateway writes fits its frame.
    pub(crate) fn new(mut entry: AuditEntry) -> Self {
        let mut body = canonical_entry(&entry);
        if body.len() > bound::FIELD_MAX && bound::bound(&mut entry) {
            body = canonical_entry(&entry);
        }
        let leaf = merkle::leaf_hash(body.as_bytes());
        Self {
            row: store::IndexRow::unplaced(entry),
            body,
            leaf,
            claim: Arc::default(),
        }
    }
}

/// Decides, once, between the writer (which takes a queued entry to insert it) and the caller
/// (which withdraws it when its time budget runs out first): exactly one of them wins.
#[derive(Debug, Default)]
pub(crate) struct Claim(std::sync::atomic::AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Claim {
    fn take(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TAKEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// An entry in the writer's queue.
#[derive(Debug)]
pub(crate) struct Queued {
    claim: Arc<Claim>,
    wait: oneshot::Receiver<Result<u64, String>>,
}

impl Queued {
    /// Resolves once the entry is durable, with its sequence number.
    pub(crate) async fn durable(&mut self) -> Result<u64, AuditError> {
        (&mut self.wait)
            .await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Takes the entry back before the writer has it: true means it will never be written;
    /// false means the writer has it, and [`Queued::durable`] says how its write ends.
    pub(crate) fn withdraw(&self) -> bool {
        self.claim.withdraw()
    }
}

/// The canonical JSON of an entry, written straight from its fields: the same text as
/// `canonical(&to_value(entry))` (the test below holds the two equal) without building a map
/// of every field first, which was a third of the cost of preparing a row. The fields are
/// listed in the byte order of their JSON names; the destructuring is exhaustive, so a field
/// added to `AuditEntry` does not compile until it is placed here.
fn canonical_entry(entry: &AuditEntry) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sorted<'a> {
        action: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        agent_name: Option<&'a str>,
        decision: &'a str,
        event: &'a str,
        id: &'a str,
        #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
        meta: &'a serde_json::Map<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<&'a str>,
        mode: &'a str,
        outcome: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy_name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<&'a str>,
        snapshot: u64,
        timestamp: &'a str,
        trace_id: &'a str,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        truncated: &'a std::collections::BTreeMap<String, meshguard_api::Truncated>,
        #[serde(skip_serializing_if = "Option::is_none")]
        trust_tier: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        would_deny: bool,
    }
    let AuditEntry {
        id,
        timestamp,
        event,
        agent_id,
        agent_name,
        trust_tier,
        action,
        resource,
        method,
        path,
        decision,
        outcome,
        policy,
        policy_name,
        rule,
        reason,
        trace_id,
        mode,
        snapshot,
        meta,
        would_deny,
        truncated,
    } = entry;
    serde_json::to_string(&Sorted {
        action,
        agent_id: agent_id.as_deref(),
        agent_name: agent_name.as_deref(),
        decision,
        event,
        id,
        meta,
        method: method.as_deref(),
        mode,
        outcome,
        path: path.as_deref(),
        policy: policy.as_deref(),
        policy_name: policy_name.as_deref(),
        reason: reason.as_deref(),
        resource: resource.as_deref(),
        rule: rule.as_deref(),
        snapshot: *snapshot,
        timestamp,
        trace_id,
        truncated,
        trust_tier: trust_tier.as_deref(),
        would_deny: *would_deny,
    })
    .expect("entries serialize")
}

/// Jobs taken per commit at most, so one commit never holds the write lock for long.
const MAX_BATCH: usize = 1024;

type Ack = oneshot::Sender<Result<u64, String>>;

/// Entries written to the staging bundles, waiting for a sync before their requests are
/// answered.
type Committed = Vec<(Ack, u64)>;

/// A group handed to the syncer: the requests to answer and what was written for them.
struct Batch {
    acks: Committed,
    flushed: store::Flushed,
}

/// Answers written entries once the staging bundle holding them is on disk: one fsync covers
/// every group written while the previous one ran. Then hands their index rows on.
struct Syncer {
    dir: PathBuf,
    /// Raised to the last seq of each batch once it is on disk (what proofs may cover).
    durable: Arc<AtomicU64>,
    shared: Arc<Shared>,
    /// Wakes the writer when a sync is done, so it commits what it inserted meanwhile. (The
    /// writer and this thread therefore live as long as the process.)
    wake: SyncSender<Job>,
    to_index: std::sync::mpsc::Sender<Vec<store::IndexRow>>,
}

impl Syncer {
    fn run(self, committed: Receiver<Batch>) {
        while let Ok(first) = committed.recv() {
            let mut batches = vec![first];
            while let Ok(more) = committed.try_recv() {
                batches.push(more);
            }
            let segments: Vec<tiles::Segment> = batches
                .iter()
                .flat_map(|b| b.flushed.segments.iter().cloned())
                .collect();
            let synced = if self.shared.failed.load(Ordering::SeqCst) {
                // After a failed sync nothing is acknowledged: what the disk dropped is unknown.
                Err(std::io::Error::other(
                    "an earlier sync of the audit log failed",
                ))
            } else {
                store::sync_segments(&self.dir, &segments)
            };
            match synced {
                Ok(at) => {
                    if !segments.is_empty() {
                        *self
                            .shared
                            .synced_at
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = at;
                    }
                    // Batches are written in seq order, and this sync covers all of them.
                    let last = batches
                        .iter()
                        .map(|b| b.flushed.last_seq)
                        .max()
                        .unwrap_or(0);
                    self.durable.fetch_max(last, Ordering::SeqCst);
                    let mut rows = Vec::new();
                    for b in batches {
                        for (done, seq) in b.acks {
                            let _ = done.send(Ok(seq));
                        }
                        rows.extend(b.flushed.rows);
                    }
                    let _ = self.to_index.send(rows);
                }
                Err(e) => {
                    if !self.shared.failed.swap(true, Ordering::SeqCst) {
                        tracing::error!(error = %e, "the audit log could not be synced to disk; the decisions waiting on it are refused and the log takes no more entries until the gateway restarts");
                    }
                    for b in batches {
                        refuse(
                            b.acks,
                            &format!("audit write could not be made durable: {e}"),
                        );
                    }
                }
            }
            self.shared.syncing.store(false, Ordering::SeqCst);
            // A full queue wakes the writer anyway; it looks at `syncing` after every round.
            let _ = self.wake.try_send(Job::Synced);
        }
    }
}

/// Where the writer sends its work: groups to the syncer, ingested rows to the indexer,
/// signed checkpoints to the publisher.
struct Downstream {
    acks: SyncSender<Batch>,
    index: std::sync::mpsc::Sender<Vec<store::IndexRow>>,
    publish: std::sync::mpsc::Sender<Publish>,
}

type CheckpointReply = oneshot::Sender<Result<Option<String>, String>>;

/// Work for the publisher.
enum Publish {
    /// Publish a signed checkpoint once its entries are durable; answer with the latest note.
    Signed(Box<store::Signed>, Option<CheckpointReply>),
    /// Answer with the latest note once everything sent before is published.
    Latest(CheckpointReply),
}

/// Publishes signed checkpoints in the log directory and records them, off the writer's
/// thread: a checkpoint syncs a dozen files and directories, and with the writer waiting on
/// them every decision waited too (on the disk, at a checkpoint every 1,000 entries, 10.4k
/// against 15.0k requests/s without; `docs/benchmarks.md`).
struct Publisher {
    conn: rusqlite::Connection,
    durable: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

impl Publisher {
    fn run(self, jobs: Receiver<Publish>) {
        while let Ok(job) = jobs.recv() {
            match job {
                Publish::Signed(signed, reply) => {
                    let size = signed.size;
                    let result = self.publish(*signed);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, size, "cannot publish an audit checkpoint");
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(result.and_then(|()| self.latest()));
                    }
                }
                Publish::Latest(reply) => {
                    let _ = reply.send(self.latest());
                }
            }
        }
    }

    /// Waits until every entry `signed` covers is durable, then publishes and records it.
    fn publish(&self, signed: store::Signed) -> Result<(), String> {
        while self.durable.load(Ordering::SeqCst) < signed.size {
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err("the log's last entries could not be made durable; no checkpoint is published over them".to_owned());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        signed.record(&self.conn).map_err(|e| format!("{e:#}"))
    }

    fn latest(&self) -> Result<Option<String>, String> {
        keys::latest_checkpoint(&self.conn)
            .map(|latest| latest.map(|(_, note)| note))
            .map_err(|e| format!("{e:#}"))
    }
}

/// Moves what is queued into `jobs`, up to [`MAX_BATCH`].
fn drain(rx: &Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// What the writer and the syncer share.
#[derive(Debug)]
struct Shared {
    /// True while the syncer holds a committed batch.
    syncing: AtomicBool,
    /// Set when a sync fails: the disk may have dropped entries, so the log stops taking more.
    failed: AtomicBool,
    /// The last position in the staging bundles a sync covered (bundle, bytes).
    synced_at: std::sync::Mutex<(u64, u64)>,
}

/// Waits for the syncer to finish the batch it holds.
fn wait_idle(shared: &Shared) {
    while shared.syncing.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// Refuses every request waiting in `batch`.
fn refuse(batch: Committed, why: &str) {
    for (done, _) in batch {
        let _ = done.send(Err(why.to_owned()));
    }
}

/// Why a decision is refused once a sync has failed.
const FAILED_SYNC: &str = "the audit log's disk failed a write or a sync; no decision is recorded until the gateway restarts (see the gateway log)";

/// What the writer's loop carries from one round to the next.
struct WriterLoop {
    /// The open group: requests whose entries are written and not yet handed to the syncer.
    pending: Committed,
    /// Whether the entries past the last sync were cut off after a failed sync.
    cut: bool,
    last_checkpoint: Instant,
}

/// The jobs of the next round: the first to arrive within `wait` (none on a timeout) and
/// everything queued behind it; `None` once every sender is gone.
fn next_jobs(rx: &Receiver<Job>, wait: Duration) -> Option<Vec<Job>> {
    let first = match rx.recv_timeout(wait) {
        Ok(job) => Some(job),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
    };
    let mut jobs: Vec<Job> = first.into_iter().collect();
    drain(rx, &mut jobs);
    Some(jobs)
}

impl store::Writer {
    /// The writer's loop. Entries are appended as they come to the open group; whenever the
    /// syncer is free the group is written to the staging bundle and handed to it, so writing
    /// the next group overlaps the previous group's fsync, and each carries everything that
    /// arrived meanwhile.
    fn run(
        &mut self,
        rx: Receiver<Job>,
        to: &Downstream,
        shared: &Shared,
        key: &LogKey,
        config: &AuditConfig,
    ) {
        let mut at = WriterLoop {
            pending: Vec::new(),
            cut: false,
            last_checkpoint: Instant::now(),
        };
        loop {
            let Some(jobs) = next_jobs(&rx, config.checkpoint_interval) else {
                self.hand_off(&mut at.pending, &to.acks, shared);
                return;
            };
            for job in jobs {
                if shared.failed.load(Ordering::SeqCst) && !at.cut {
                    at.cut = true;
                    self.cut_after_failure(&mut at.pending, shared);
                }
                self.handle(job, &mut at, to, shared, key);
            }
            if !shared.syncing.load(Ordering::SeqCst) {
                self.hand_off(&mut at.pending, &to.acks, shared);
            }
            self.sign_if_due(&mut at, to, shared, key, config);
        }
    }

    /// The entries past the last sync were refused when the sync failed: off the disk with
    /// them, and every request waiting on the open group is refused.
    fn cut_after_failure(&mut self, pending: &mut Committed, shared: &Shared) {
        let at = *shared.synced_at.lock().unwrap_or_else(|p| p.into_inner());
        self.cut_back(at);
        refuse(std::mem::take(pending), FAILED_SYNC);
    }

    /// One job: an entry to append, an export to ingest, cosignatures to store, or a
    /// checkpoint asked for. Everything but an append first hands the open group off.
    fn handle(
        &mut self,
        job: Job,
        at: &mut WriterLoop,
        to: &Downstream,
        shared: &Shared,
        key: &LogKey,
    ) {
        match job {
            Job::Append(prepared, done) => {
                if !prepared.claim.take() {
                    // Withdrawn by its caller, who answered with another verdict and records
                    // that one instead.
                    return;
                }
                if shared.failed.load(Ordering::SeqCst) {
                    let _ = done.send(Err(FAILED_SYNC.to_owned()));
                    return;
                }
                match self.insert(*prepared) {
                    Ok(seq) => at.pending.push((done, seq)),
                    Err(e) => {
                        let _ = done.send(Err(format!("audit write refused: {e}")));
                    }
                }
            }
            Job::Synced => {}
            Job::Ingest(lines, done) => {
                self.hand_off(&mut at.pending, &to.acks, shared);
                wait_idle(shared);
                let result = if shared.failed.load(Ordering::SeqCst) {
                    Err("the audit log's disk failed a write or a sync; nothing is ingested until the gateway restarts".to_owned())
                } else {
                    self.ingest(&lines)
                };
                let _ = done.send(result.map(|(report, rows)| {
                    let _ = to.index.send(rows);
                    report
                }));
            }
            Job::Cosign(rows, done) => {
                self.hand_off(&mut at.pending, &to.acks, shared);
                let _ = done.send(self.add_cosignatures(&rows));
            }
            Job::Checkpoint(done) => {
                self.hand_off(&mut at.pending, &to.acks, shared);
                let job = match self.sign(key) {
                    Ok(Some(signed)) => Publish::Signed(Box::new(signed), Some(done)),
                    Ok(None) => Publish::Latest(done),
                    Err(e) => {
                        let _ = done.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                at.last_checkpoint = Instant::now();
                let _ = to.publish.send(job);
            }
        }
    }

    /// Signs a checkpoint when enough entries, or enough time, have passed since the last:
    /// signed over the written entries, published once the syncer has them on disk.
    fn sign_if_due(
        &mut self,
        at: &mut WriterLoop,
        to: &Downstream,
        shared: &Shared,
        key: &LogKey,
        config: &AuditConfig,
    ) {
        let due = self.unsigned_rows() >= config.checkpoint_every
            || (self.unsigned_rows() > 0
                && at.last_checkpoint.elapsed() >= config.checkpoint_interval);
        if !due || shared.failed.load(Ordering::SeqCst) {
            return;
        }
        match self.sign(key) {
            Ok(Some(signed)) => {
                let _ = to.publish.send(Publish::Signed(Box::new(signed), None));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot sign an audit checkpoint");
            }
        }
        at.last_checkpoint = Instant::now();
    }

    /// Writes the open group and gives it to the syncer, which answers its requests once the
    /// staging bundle is on disk.
    fn hand_off(&mut self, pending: &mut Committed, acks: &SyncSender<Batch>, shared: &Shared) {
        if pending.is_empty() {
            return;
        }
        let batch = std::mem::take(pending);
        let flushed = match self.commit() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; the decisions waiting on it are refused");
                refuse(batch, &format!("audit write failed: {e}"));
                // What reached the file is cut off with the rest once the log stops.
                shared.failed.store(true, Ordering::SeqCst);
                return;
            }
        };
        shared.syncing.store(true, Ordering::SeqCst);
        if let Err(std::sync::mpsc::SendError(b)) = acks.send(Batch {
            acks: batch,
            flushed,
        }) {
            shared.syncing.store(false, Ordering::SeqCst);
            refuse(b.acks, "the audit log's sync thread stopped");
        }
    }
}

impl store::Indexer {
    /// The indexer's loop: catches up with the log as it was at start, then indexes each group
    /// the syncer hands on. A failure is logged and retried from the log on the next group.
    fn run(&mut self, log_size: u64, rows: Receiver<Vec<store::IndexRow>>) {
        if let Err(e) = self.catch_up(log_size) {
            tracing::error!(error = %format!("{e:#}"), "cannot index the audit log; lists and stats stop at the last indexed entry until the gateway restarts");
            return;
        }
        while let Ok(first) = rows.recv() {
            let mut group = first;
            while let Ok(more) = rows.try_recv() {
                group.extend(more);
            }
            if let Err(e) = self.add(&group) {
                tracing::error!(error = %format!("{e:#}"), "cannot index audit entries; they are read from the log with the next group");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let v: Value = serde_json::from_str(r#"{"b": 1, "a": {"d": "x", "c": [2, 1]}}"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"c":[2,1],"d":"x"},"b":1}"#);
    }

    #[test]
    fn an_entry_written_field_by_field_is_its_canonical_json() {
        let full: AuditEntry = serde_json::from_value(serde_json::json!({
            "id": "aud_1", "timestamp": "2026-11-23T10:00:00.000Z", "event": "decision",
            "agentId": "agent_a", "agentName": "n\u{e9} \"quoted\"", "trustTier": "verified",
            "action": "read:x", "resource": "r", "method": "GET", "path": "/proxy/x",
            "decision": "deny", "outcome": "allow", "policy": "p", "policyName": "p",
            "rule": "rule-0", "reason": "why\n", "traceId": "trace_1", "mode": "audit",
            "snapshot": 7, "meta": {"z": 1, "f": 0.25, "a": {"y": [2, 1e-7], "b": null}}, "wouldDeny": true
        }))
        .unwrap();
        let sparse: AuditEntry = serde_json::from_value(serde_json::json!({
            "id": "aud_2", "timestamp": "t", "event": "bypass_attempt", "action": "a",
            "decision": "deny", "outcome": "deny", "traceId": "trace_2", "mode": "enforce"
        }))
        .unwrap();
        for entry in [full, sparse] {
            let via_value = canonical(&serde_json::to_value(&entry).unwrap());
            assert_eq!(canonical_entry(&entry), via_value);
        }
    }

    #[test]
    fn chain_hash_covers_the_previous_hash_and_the_body() {
        let a = chain_hash(GENESIS, "{}").unwrap();
        assert_ne!(a, chain_hash(GENESIS, "{ }").unwrap());
        assert_ne!(a, chain_hash(&a, "{}").unwrap());
        assert!(chain_hash("zz", "{}").is_none());
    }
}
