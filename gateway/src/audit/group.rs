//! The group commit, led by the requests themselves. An entry is queued; the request whose
//! entry finds no group on its way leads the next one on its own worker: it lets the tasks
//! ready on that worker queue theirs first (a few yields), then takes the queue, chains and
//! writes the entries, syncs them with one `fdatasync`, answers every request of the group,
//! and goes on while entries arrived meanwhile. Everyone else only waits for the answer.
//!
//! Before, a writer thread took each entry from a channel and a syncer thread synced each
//! group: three threads woke one another for every group, and on two cores that cost more
//! than the work (docs/benchmarks.md). The writer thread stays for what is not an append
//! (ingests, cosignatures, checkpoints) and leads the groups whose leader went away before
//! leading them or handed them on (after [`LEADER_ROUNDS`] groups, or on finding the log held
//! by the writer thread's own job).
//!
//! Nothing about durability changes: an answer waits for the sync that covers its entry; an
//! entry is taken from the queue only by a leader, so a caller whose budget runs out first
//! withdraws it and it is never written; a failed write or sync refuses the group, cuts it off
//! the staging bundle and stops the log.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::note::LogKey;
use super::{AuditConfig, AuditError, IngestReport, Prepared, Publish, store};
use meshguard_api::AuditExportLine;

pub(crate) type Ack = oneshot::Sender<Result<u64, String>>;

/// Entries waiting for a leader; a full queue refuses (the gateway is overloaded).
const QUEUE_MAX: usize = 65_536;

/// How many times a new leader lets the other tasks ready on its worker run (and queue their
/// entries) before it takes the queue. With none, groups held 1.4 entries on tmpfs and each
/// paid its own write and sync (`audit_rows`: 6.1-8.2 µs of CPU an entry, against 3.2-4.8
/// with the writer and syncer threads); with four, 120 and 3.2-3.7 µs.
const GATHER_YIELDS: usize = 4;

/// How many groups one leader writes at most before the writer thread takes the duty over
/// (behind the jobs it has): a request's own answer waits until it stops leading, and under a
/// steady load the queue never empties.
const LEADER_ROUNDS: usize = 4;

/// Entries a group takes from the queue at most, so one group never holds the log for long.
const MAX_GROUP: usize = 1024;

/// A group synced within this time (the sync alone: writing it is CPU, and a thread preempted
/// while writing on a busy machine is not a slow disk) marks the log's disk as fast (tmpfs, a
/// disk whose cache survives power loss): the next leader leads on its worker as it is, not from
/// [`blocking`]. A disk that then stalls holds that one worker for that one sync, while the
/// runtime's other workers go on (they steal its queued tasks, but not the one in its LIFO
/// slot, which waits for the sync too); the next groups are led from `blocking` again.
const FAST_SYNC: Duration = Duration::from_micros(200);

/// Checkpoints signed because enough entries were written come at most this often. Each one
/// publishes partial tiles and syncs them and their directories: at 20,000 decisions a second,
/// a checkpoint every 1,000 entries was 20 publications a second and the publisher's thread
/// used 0.6-0.9 s of CPU in a 10 s run, 0.08 s with this bound (docs/benchmarks.md). A
/// checkpoint asked for (`Job::Checkpoint`) is signed at once.
const CHECKPOINT_MIN_GAP: Duration = Duration::from_secs(1);

/// Why a decision is refused once a write or a sync has failed.
const FAILED_SYNC: &str = "the audit log's disk failed a write or a sync; no decision is recorded until the gateway restarts (see the gateway log)";

/// Work for the writer thread.
#[derive(Debug)]
pub(crate) enum Job {
    Ingest(
        Vec<AuditExportLine>,
        oneshot::Sender<Result<IngestReport, String>>,
    ),
    Checkpoint(oneshot::Sender<Result<Option<String>, String>>),
    Cosign(
        Vec<store::Cosignature>,
        oneshot::Sender<Result<usize, String>>,
    ),
    /// A leader went away before leading: the writer thread leads its group.
    Lead,
}

/// Entries queued for the next group, and whether someone is to lead it.
#[derive(Default)]
struct Queue {
    entries: Vec<(Box<Prepared>, Ack)>,
    leading: bool,
}

/// The writer's state, held by one leader (or the writer thread) at a time.
struct Core {
    writer: store::Writer,
    /// The last position in the staging bundles a sync covered (bundle, bytes): where a
    /// failed write or sync cuts the log back to.
    synced_at: (u64, u64),
    /// Whether the entries past the last sync were cut off after a failure.
    cut: bool,
}

/// What leaders, the writer thread and the publisher share.
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    core: Mutex<Core>,
    /// Set when a write or a sync fails: the disk may have dropped entries, so the log stops
    /// taking more until the gateway restarts.
    pub(crate) failed: AtomicBool,
    /// Whether the last group was synced within [`FAST_SYNC`].
    fast_syncs: AtomicBool,
    dir: PathBuf,
    durable: Arc<AtomicU64>,
    to_index: Sender<Vec<store::IndexRow>>,
    to_publish: Sender<Publish>,
    /// The writer thread, for a group whose leader went away.
    wake: Mutex<Sender<Job>>,
    key: Arc<LogKey>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("dir", &self.dir)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The duty to lead the next group, held by the request whose entry found no leader. Spent in
/// [`Lead::run`]; dropped unspent (the caller stopped waiting, or never waited), the writer
/// thread leads instead, so a queued entry is never left without one.
#[derive(Debug)]
pub(crate) struct Lead(Option<Arc<GroupCommit>>);

impl Lead {
    /// Lets the tasks ready on this worker queue their entries, then leads. When the writer
    /// thread holds the log for an ingest or cosignatures, the lead goes to it instead (it
    /// leads once that job is done), and this request waits for its answer like any other,
    /// so its deadline still runs.
    pub(crate) async fn run(mut self) {
        for _ in 0..GATHER_YIELDS {
            tokio::task::yield_now().await;
        }
        let group = self.0.take().expect("a lead is spent once");
        let core = match group.core.try_lock() {
            Ok(core) => core,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                group.hand_to_writer();
                return;
            }
        };
        group.lead(core, By::Request);
    }
}

/// Who leads a group.
#[derive(Clone, Copy, PartialEq)]
enum By {
    /// A request, on its worker: up to [`LEADER_ROUNDS`] groups, in place while the disk
    /// syncs fast, from [`blocking`] when it does not.
    Request,
    /// The writer thread: [`LEADER_ROUNDS`] groups, then the jobs queued behind it.
    Writer,
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.hand_to_writer();
        }
    }
}

/// On a panic while leading (a bug): the log stops, as after a failed sync, so what the group
/// had written is cut off by the next leader and every entry after is refused; and the next
/// entry queued leads again, so none waits on a leader that is gone.
struct Unwind<'a>(&'a GroupCommit);

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
            lock(&self.0.queue).leading = false;
        }
    }
}

/// Runs `f`, which waits on the disk, without holding up the other tasks of this worker: on a
/// multi-threaded runtime the worker's tasks move to another thread meanwhile (a disk that
/// stalls then stalls one thread, not a share of the runtime). That move costs: on tmpfs,
/// 5.0-5.2 µs of CPU an entry with it against 3.35-3.7 without (`audit_rows`), so a leader
/// whose log syncs fast leads in place (see [`FAST_SYNC`]).
fn blocking(f: impl FnOnce()) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f);
        }
        _ => f(),
    }
}

/// The channels and settings a [`GroupCommit`] is built with.
pub(crate) struct Outlets {
    pub(crate) to_index: Sender<Vec<store::IndexRow>>,
    pub(crate) to_publish: Sender<Publish>,
    pub(crate) wake: Sender<Job>,
}

impl GroupCommit {
    pub(crate) fn new(
        writer: store::Writer,
        to: Outlets,
        key: Arc<LogKey>,
        config: &AuditConfig,
    ) -> Self {
        Self {
            queue: Mutex::default(),
            dir: writer.log_dir(),
            durable: writer.durable(),
            core: Mutex::new(Core {
                synced_at: writer.position(),
                writer,
                cut: false,
            }),
            failed: AtomicBool::new(false),
            fast_syncs: AtomicBool::new(false),
            to_index: to.to_index,
            to_publish: to.to_publish,
            wake: Mutex::new(to.wake),
            key,
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
        }
    }

    /// Queues an entry. `Some(lead)` when no one is to lead the next group yet: the caller
    /// leads it ([`Lead::run`]) or drops the lead to the writer thread.
    pub(crate) fn push(
        self: &Arc<Self>,
        prepared: Box<Prepared>,
        done: Ack,
    ) -> Result<Option<Lead>, AuditError> {
        let mut queue = lock(&self.queue);
        if queue.entries.len() >= QUEUE_MAX {
            return Err(AuditError::Full);
        }
        queue.entries.push((prepared, done));
        if queue.leading {
            return Ok(None);
        }
        queue.leading = true;
        Ok(Some(Lead(Some(Arc::clone(self)))))
    }

    /// Writes groups until the queue is empty, each of every entry queued while the one
    /// before was written and synced (at most [`MAX_GROUP`]); after [`LEADER_ROUNDS`] groups
    /// the writer thread goes on. A request leads in place while the disk syncs fast, and
    /// hands on as soon as a group was slow; on a slow disk it leads from [`blocking`].
    fn lead(&self, core: MutexGuard<'_, Core>, by: By) {
        match by {
            By::Request if self.fast_syncs.load(Ordering::Relaxed) => self.rounds(core, true),
            By::Request => blocking(|| self.rounds(core, false)),
            By::Writer => self.rounds(core, false),
        }
    }

    fn rounds(&self, mut core: MutexGuard<'_, Core>, in_place: bool) {
        let _unwind = Unwind(self);
        for round in 0.. {
            let taken: Vec<_> = {
                let mut queue = lock(&self.queue);
                if queue.entries.is_empty() {
                    queue.leading = false;
                    return;
                }
                let slowed = in_place && !self.fast_syncs.load(Ordering::Relaxed);
                if round == LEADER_ROUNDS || slowed {
                    drop(queue);
                    drop(core);
                    self.hand_to_writer();
                    return;
                }
                let n = queue.entries.len().min(MAX_GROUP);
                queue.entries.drain(..n).collect()
            };
            self.write_group(&mut core, taken);
        }
    }

    /// Gives the next group to the writer thread, behind the jobs it has. If the thread is
    /// gone (it panicked), the log stops and this thread refuses what is queued.
    fn hand_to_writer(&self) {
        if lock(&self.wake).send(Job::Lead).is_err() {
            if !self.failed.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    "the audit log's writer thread is gone; no decision is recorded until the gateway restarts"
                );
            }
            self.lead(lock(&self.core), By::Writer);
        }
    }

    /// Takes each entry not withdrawn, chains and writes them, syncs them once, then answers
    /// their requests and hands their index rows on.
    fn write_group(&self, core: &mut Core, taken: Vec<(Box<Prepared>, Ack)>) {
        // A withdrawn entry is skipped: its caller answered with another verdict and records
        // that one instead.
        let claimed = taken
            .into_iter()
            .filter(|(prepared, _)| prepared.claim.take());
        if self.failed.load(Ordering::SeqCst) {
            self.stop(core);
            for (_, done) in claimed {
                let _ = done.send(Err(FAILED_SYNC.to_owned()));
            }
            return;
        }
        let mut acks = Vec::new();
        for (prepared, done) in claimed {
            match core.writer.insert(*prepared) {
                Ok(seq) => acks.push((done, seq)),
                Err(e) => {
                    let _ = done.send(Err(format!("audit write refused: {e}")));
                }
            }
        }
        if acks.is_empty() {
            return;
        }
        let flushed = match core.writer.commit() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; the decisions waiting on it are refused and the log takes no more entries until the gateway restarts");
                refuse(acks, &format!("audit write failed: {e}"));
                self.stop(core);
                return;
            }
        };
        let started = Instant::now();
        let synced = store::sync_segments(&self.dir, &flushed.segments);
        self.fast_syncs
            .store(started.elapsed() < FAST_SYNC, Ordering::Relaxed);
        match synced {
            Ok(at) => {
                if !flushed.segments.is_empty() {
                    core.synced_at = at;
                }
                self.durable.fetch_max(flushed.last_seq, Ordering::SeqCst);
                for (done, seq) in acks {
                    let _ = done.send(Ok(seq));
                }
                let _ = self.to_index.send(flushed.rows);
            }
            Err(e) => {
                tracing::error!(error = %e, "the audit log could not be synced to disk; the decisions waiting on it are refused and the log takes no more entries until the gateway restarts");
                refuse(acks, &format!("audit write could not be made durable: {e}"));
                self.stop(core);
            }
        }
    }

    /// After a failed write or sync: the log stops, and what was written past the last sync
    /// is cut off the staging bundles, so the refused entries never reappear.
    fn stop(&self, core: &mut Core) {
        self.failed.store(true, Ordering::SeqCst);
        if !core.cut {
            core.cut = true;
            let at = core.synced_at;
            core.writer.cut_back(at);
        }
    }

    /// How long the writer thread may wait for a job before a checkpoint may be due: the
    /// rest of the interval, and at most the minimum gap, since leaders write entries without
    /// waking this thread (the whole interval once the log has stopped: nothing is signed
    /// then).
    fn until_checkpoint_due(&self, last_checkpoint: Instant) -> Duration {
        if self.failed.load(Ordering::SeqCst) {
            return self.checkpoint_interval;
        }
        match self
            .checkpoint_interval
            .saturating_sub(last_checkpoint.elapsed())
        {
            // Nothing was due at the interval (no new entry): look again in a second.
            rest if rest.is_zero() => CHECKPOINT_MIN_GAP,
            rest => rest.min(CHECKPOINT_MIN_GAP),
        }
    }

    /// Signs a checkpoint when enough entries (and at least [`CHECKPOINT_MIN_GAP`]), or enough
    /// time, have passed since the last; the publisher publishes it. The log is not taken
    /// from the leaders before either time has passed.
    fn sign_if_due(&self, last_checkpoint: &mut Instant) {
        let since = last_checkpoint.elapsed();
        if since < CHECKPOINT_MIN_GAP.min(self.checkpoint_interval) {
            return;
        }
        let mut core = lock(&self.core);
        let unsigned = core.writer.unsigned_rows();
        let due = (unsigned >= self.checkpoint_every && since >= CHECKPOINT_MIN_GAP)
            || (unsigned > 0 && since >= self.checkpoint_interval);
        if !due || self.failed.load(Ordering::SeqCst) {
            return;
        }
        match core.writer.sign(&self.key) {
            Ok(Some(signed)) => {
                let _ = self
                    .to_publish
                    .send(Publish::Signed(Box::new(signed), None));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot sign an audit checkpoint");
            }
        }
        *last_checkpoint = Instant::now();
    }

    /// The writer thread's loop: the jobs that are not appends, checkpoints (signed here, off
    /// the requests' workers), and the groups whose leader went away or handed them on. It
    /// lives as long as the process (the log's handle and this struct hold its channel).
    pub(crate) fn run_writer(&self, jobs: Receiver<Job>) {
        let mut last_checkpoint = Instant::now();
        loop {
            match jobs.recv_timeout(self.until_checkpoint_due(last_checkpoint)) {
                Ok(job) => self.handle(job, &mut last_checkpoint),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.sign_if_due(&mut last_checkpoint);
        }
    }

    /// A group to lead, an ingest, cosignatures or a checkpoint asked for. Holding the core,
    /// no group is being written meanwhile.
    fn handle(&self, job: Job, last_checkpoint: &mut Instant) {
        match job {
            Job::Lead => self.lead(lock(&self.core), By::Writer),
            Job::Ingest(lines, done) => {
                let result = self.ingest(&mut lock(&self.core), &lines);
                let _ = done.send(result.map(|(report, rows)| {
                    let _ = self.to_index.send(rows);
                    report
                }));
            }
            Job::Cosign(rows, done) => {
                let _ = done.send(lock(&self.core).writer.add_cosignatures(&rows));
            }
            Job::Checkpoint(done) => {
                *last_checkpoint = Instant::now();
                let job = match lock(&self.core).writer.sign(&self.key) {
                    Ok(Some(signed)) => Publish::Signed(Box::new(signed), Some(done)),
                    Ok(None) => Publish::Latest(done),
                    Err(e) => {
                        let _ = done.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let _ = self.to_publish.send(job);
            }
        }
    }

    /// Ingests an export's lines, unless the log has stopped; a failed write or sync of them
    /// stops the log, as a group's does.
    fn ingest(
        &self,
        core: &mut Core,
        lines: &[AuditExportLine],
    ) -> Result<(IngestReport, Vec<store::IndexRow>), String> {
        if self.failed.load(Ordering::SeqCst) {
            return Err("the audit log's disk failed a write or a sync; nothing is ingested until the gateway restarts".to_owned());
        }
        match core.writer.ingest(lines) {
            Ok(ingested) => {
                // Synced by the ingest itself: a later failure cuts back to here, not before
                // the entries just ingested.
                core.synced_at = core.writer.position();
                Ok(ingested)
            }
            Err(store::IngestError::Refused(why)) => Err(why),
            Err(store::IngestError::Disk(why)) => {
                tracing::error!(error = %why, "the audit log's disk failed during an ingest; the log takes no more entries until the gateway restarts");
                self.stop(core);
                Err(why)
            }
        }
    }
}

/// Refuses every request of a group.
fn refuse(acks: Vec<(Ack, u64)>, why: &str) {
    for (done, _) in acks {
        let _ = done.send(Err(why.to_owned()));
    }
}
