//! The tamper-evident audit log: every decision is an entry of an append-only log in the
//! C2SP tlog-tiles layout (`tiles`), acknowledged only once it is durable.
//!
//! Entries are written in groups, each led by a request whose entry found no group on its way
//! (`group`): it chains the queued entries, writes them to the staging bundle, makes them
//! durable with one `fdatasync` and only then answers every request of the group. Three
//! threads besides: the writer takes what is not an append (ingests, cosignatures,
//! checkpoints) and the groups whose leader went away; the indexer puts the durable entries
//! into SQLite, the log's index; the publisher writes the signed checkpoints. A failed write or
//! sync refuses the waiting requests and stops the log (every later decision fails closed in
//! enforce mode). Each entry's hash chains to the previous entry of the same source (this
//! gateway, or a sidecar whose export was ingested), and every entry is a leaf of an RFC 6962
//! Merkle tree whose root the writer signs as a C2SP checkpoint.

pub(crate) mod bound;
mod group;
pub(crate) mod keys;
pub(crate) mod note;
mod store;

pub(crate) use meshguard_tlog::{merkle, tiles};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use meshguard_api::{AuditEntry, AuditExportLine};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

pub(crate) use store::{AuditQuery, Cosignature, IndexedEntry, Reader, Writer, bound};

/// A connection to the database the log's records are in (for the benchmarks' set-up).
pub(crate) fn store_conn(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    store::open_conn(path)
}

use group::{GroupCommit, Job};
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
    /// The writer thread: ingests, cosignatures, checkpoints asked for.
    tx: std::sync::mpsc::Sender<Job>,
    origin: Arc<str>,
    vkey: Arc<str>,
    reader: Arc<store::Reader>,
    /// The same key, for the checkpoint a sidecar sends with its heartbeat.
    key: Arc<LogKey>,
    /// Decisions are not recorded: only for measuring what the audit costs
    /// (`bench_support::prepare_unaudited`); no setting of the gateway turns it on.
    discard: bool,
    redaction: crate::redaction::Redaction,
    /// The queue of entries and the writer's state, shared by the leaders of groups.
    group: Arc<GroupCommit>,
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
        let writer = store::Writer::open(&config.db_path, &config.log_dir, &config.origin, &vkey)?;
        let durable = writer.durable();
        let reader = Arc::new(store::Reader::open(
            &config.db_path,
            &config.log_dir,
            Arc::clone(&durable),
            writer.indexed(),
        )?);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (to_index, index_rx) = std::sync::mpsc::channel::<Vec<store::IndexRow>>();
        let (to_publish, publish_rx) = std::sync::mpsc::channel::<Publish>();
        let origin: Arc<str> = config.origin.clone().into();
        let redaction = config.redaction;
        let mut indexer = store::Indexer::open(
            &config.db_path,
            &config.log_dir,
            &config.origin,
            writer.indexed(),
        )?;
        let log_size = durable.load(Ordering::SeqCst);
        let publish_conn = store::open_conn(&config.db_path)?;
        let group = Arc::new(GroupCommit::new(
            writer,
            group::Outlets {
                to_index,
                to_publish,
                wake: tx.clone(),
            },
            Arc::clone(&signer),
            &config,
        ));
        let publisher = Publisher {
            conn: publish_conn,
            durable,
            group: Arc::clone(&group),
        };
        std::thread::Builder::new()
            .name("audit-publish".into())
            .spawn(move || publisher.run(publish_rx))?;
        std::thread::Builder::new()
            .name("audit-index".into())
            .spawn(move || indexer.run(log_size, index_rx))?;
        let writer_group = Arc::clone(&group);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer_group.run_writer(rx))?;
        Ok(Self {
            tx,
            origin,
            vkey,
            reader,
            key: signer,
            discard: false,
            redaction,
            group,
        })
    }

    /// Whether a failed write or sync stopped the log: no decision is recorded (every one fails
    /// closed) until the gateway restarts, which `/health` then asks for.
    pub(crate) fn stopped(&self) -> bool {
        self.group.failed.load(Ordering::SeqCst)
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

    /// Queues `entry` for the next group. The caller may withdraw it ([`Queued::withdraw`]) as
    /// long as no group's leader has taken it; a withdrawn entry is never written.
    pub(crate) fn queue(&self, mut entry: AuditEntry) -> Result<Queued, AuditError> {
        self.redaction.apply(&mut entry);
        let (done, wait) = oneshot::channel();
        let claim = Arc::new(Claim::default());
        if self.discard {
            let _ = done.send(Ok(0));
            return Ok(Queued {
                claim,
                wait,
                lead: None,
            });
        }
        // Serialized and leaf-hashed here, on the request's own worker, before the group's
        // leader takes it.
        let mut prepared = Box::new(Prepared::new(entry));
        prepared.claim = Arc::clone(&claim);
        let lead = self.group.push(prepared, done)?;
        Ok(Queued { claim, wait, lead })
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

/// An entry ready for the log: its canonical body and Merkle leaf hash, computed before it is
/// queued, and its index row's fields, moved out of the entry (the group's leader places it).
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
    /// Whether this caller is to lead the next group (see `group`).
    lead: Option<group::Lead>,
}

impl Queued {
    /// Resolves once the entry is durable, with its sequence number.
    pub(crate) async fn durable(&mut self) -> Result<u64, AuditError> {
        if let Some(lead) = self.lead.take() {
            lead.run().await;
        }
        (&mut self.wait)
            .await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Write)
    }

    /// Leaves the next group to the writer thread: for a caller that queues more, or waits on
    /// something else, before it waits for this entry (the entries queued meanwhile by every
    /// other request would wait on it).
    pub(crate) fn lead_elsewhere(mut self) -> Self {
        self.lead = None;
        self
    }

    /// Takes the entry back before a group's leader has it: true means it will never be
    /// written; false means a leader has it, and [`Queued::durable`] says how its write ends.
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

type CheckpointReply = oneshot::Sender<Result<Option<String>, String>>;

/// Work for the publisher.
pub(crate) enum Publish {
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
    group: Arc<GroupCommit>,
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
            if self.group.failed.load(Ordering::SeqCst) {
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

impl store::Indexer {
    /// The indexer's loop: catches up with the log as it was at start, then indexes each group
    /// the group's leader hands on. A failure is logged and retried from the log on the next group.
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
