//! What a gateway does differently on a shared PostgreSQL control plane than alone on SQLite,
//! behind one trait, [`ControlPlane`]: [`Standalone`] does the single-gateway thing (nothing to
//! follow, no central audit index) and [`Shared`] the several-gateway one. Nothing else asks which
//! store is open.
//!
//! On PostgreSQL each gateway follows the changes the others make. A gateway keeps two things in
//! memory that another gateway's write makes stale: the policy snapshot and the agent cache. The
//! follower thread reads the `changes` table after the last record it applied (the store commits
//! records in `seq` order, see `store/postgres.rs`) and, per record, rereads the agent it names
//! or rebuilds the snapshot once for any number of policy records. An agent it cannot read is
//! dropped from the cache for a revoke or token re-issue (fail closed), and kept for a create or
//! update, whose record is read again next time. It wakes on the `NOTIFY` every write sends, and
//! every `CONTROL_PLANE_POLL_MS` in any case, so a change acts on every gateway within that
//! interval even when a notification is lost or the listening connection is down. Records this
//! gateway wrote come back too; applying them again is harmless (the same agent is reread, the
//! same policies rebuilt).
//!
//! When the database is down, the follower keeps its place and retries every interval; the data
//! plane goes on from the snapshot and the cache it has. The shipper copies this gateway's audit
//! entries into the central index, which `/admin/cluster/audit` lists and verifies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;

use crate::audit::AuditLog;
use crate::error::ApiError;
use crate::state::{Db, Policies};
use crate::store::{CentralQuery, ChangeFilter, PgStore, Store};

/// The control plane's PostgreSQL-only behaviour, a part of the state (`Arc<dyn ControlPlane>`)
/// asked for by start-up, `/admin/info` and `/admin/cluster/audit`.
#[async_trait::async_trait]
pub(crate) trait ControlPlane: Send + Sync + std::fmt::Debug {
    /// What `/admin/info` shows as `controlPlane`.
    fn status(&self) -> serde_json::Value;

    /// Starts what keeps this gateway in step with the others: the follower, which refreshes
    /// the agent cache in `db` and rebuilds `policies`, and the shipper, which copies `audit`
    /// into the central index. Nothing for a gateway alone.
    async fn start(&self, db: &Db, policies: &Policies, audit: &AuditLog) -> anyhow::Result<()>;

    /// Where the installation's license records live when gateways share them (`None`: the
    /// gateway's own license directory).
    fn license_records(&self) -> Option<Arc<dyn meshguard_license::site::Records>>;

    /// Keeps the license in step with the other gateways: checks it again when one installs a
    /// license, and holds this gateway's lease for the license's `maxGateways`. Nothing for a
    /// gateway alone.
    async fn follow_license(&self, link: LicenseLink) -> anyhow::Result<()>;

    /// The central audit index of every gateway sharing the control plane, or the 404 a
    /// gateway alone answers.
    fn central_index(&self) -> Result<CentralIndex, ApiError>;
}

/// A gateway alone on its SQLite store: nothing to follow, no central audit index.
#[derive(Debug)]
pub(crate) struct Standalone;

#[async_trait::async_trait]
impl ControlPlane for Standalone {
    fn status(&self) -> serde_json::Value {
        Status::new("sqlite").to_json()
    }

    async fn start(&self, _: &Db, _: &Policies, _: &AuditLog) -> anyhow::Result<()> {
        Ok(())
    }

    fn license_records(&self) -> Option<Arc<dyn meshguard_license::site::Records>> {
        None
    }

    async fn follow_license(&self, _: LicenseLink) -> anyhow::Result<()> {
        Ok(())
    }

    fn central_index(&self) -> Result<CentralIndex, ApiError> {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_shared_control_plane",
            "this gateway has no shared control plane (DATABASE_URL), so no central audit index; /admin/audit lists its own decisions",
        ))
    }
}

/// One of several gateways on a PostgreSQL control plane (`DATABASE_URL`).
#[derive(Debug)]
pub(crate) struct Shared {
    pg: Arc<PgStore>,
    /// Set by `follow_license`: the follower checks the license again on a license change.
    license: Arc<std::sync::Mutex<Option<LicenseLink>>>,
    status: Arc<Status>,
    /// `CONTROL_PLANE_POLL_MS`: how often the follower and the shipper look, at the latest.
    poll: Duration,
}

impl Shared {
    pub(crate) fn new(pg: Arc<PgStore>, poll: Duration) -> Self {
        Self {
            pg,
            license: Arc::default(),
            status: Arc::new(Status::new("postgresql")),
            poll,
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for Shared {
    fn status(&self) -> serde_json::Value {
        self.status.to_json()
    }

    async fn start(&self, db: &Db, policies: &Policies, audit: &AuditLog) -> anyhow::Result<()> {
        let follower = Follower {
            db: db.clone(),
            policies: policies.clone(),
            pg: Arc::clone(&self.pg),
            status: Arc::clone(&self.status),
            license: Arc::clone(&self.license),
        };
        spawn_follower(follower, self.poll).await?;
        spawn_shipper(audit.clone(), Arc::clone(&self.pg), self.poll).await
    }

    fn central_index(&self) -> Result<CentralIndex, ApiError> {
        Ok(CentralIndex(Arc::clone(&self.pg)))
    }

    fn license_records(&self) -> Option<Arc<dyn meshguard_license::site::Records>> {
        Some(Arc::new(crate::license::SharedRecords(Arc::clone(
            &self.pg,
        ))))
    }

    async fn follow_license(&self, link: LicenseLink) -> anyhow::Result<()> {
        *self
            .license
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(link.clone());
        if !link.licensing.is_on() {
            // Nothing to count: no lease rows written every poll for an unlicensed cluster.
            return Ok(());
        }
        spawn_lease(link, Arc::clone(&self.pg), self.poll).await
    }
}

/// What the follower and the lease act on: the gateway's licensing and where it alerts, and
/// the id of this gateway's lease (its origin and a random part, new each start, so gateways
/// sharing an origin are still counted apart).
#[derive(Debug, Clone)]
pub(crate) struct LicenseLink {
    pub(crate) licensing: Arc<crate::license::Licensing>,
    pub(crate) alerts: crate::alerts::Alerts,
    pub(crate) lease_id: String,
}

impl LicenseLink {
    /// Checks the license again; a panic in the check is caught and logged, so the follower
    /// that calls this goes on applying revocations and policy changes.
    fn recheck(&self) {
        self.guarded(|l| {
            l.refresh(&self.alerts);
        });
    }

    /// Runs `f` on the licensing, catching a panic (logged), so the thread calling it (the
    /// follower, the lease) goes on.
    fn guarded(&self, f: impl FnOnce(&crate::license::Licensing)) {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self.licensing)));
        if ran.is_err() {
            tracing::error!("the license check failed (a panic, above); the last check stands");
        }
    }
}

/// A lease lasts this many polls: a gateway that stops renewing is not counted after it.
const LEASE_POLLS: u32 = 3;

/// Renews this gateway's lease every `poll` and puts it in the read-only licensing state while
/// more gateways than the license's `maxGateways` started before it and still serve. With the
/// database down the last answer stands.
/// The first renewal happens before this returns, so a gateway beyond the limit starts
/// read-only.
async fn spawn_lease(link: LicenseLink, pg: Arc<PgStore>, poll: Duration) -> anyhow::Result<()> {
    let lease = poll.saturating_mul(LEASE_POLLS).max(Duration::from_secs(3));
    let failing = std::sync::atomic::AtomicBool::new(false);
    let renew = move || {
        let rank = match pg.heartbeat(&link.lease_id, lease) {
            Ok(rank) => {
                failing.store(false, Ordering::Relaxed);
                Some(rank)
            }
            // The gateways cannot be counted meanwhile (logged once per outage).
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot renew this gateway's license lease; retrying");
                }
                None
            }
        };
        link.guarded(|l| l.set_rank(rank, &link.alerts));
    };
    let renew = tokio::task::spawn_blocking(move || {
        renew();
        renew
    })
    .await?;
    std::thread::Builder::new()
        .name("license-lease".into())
        .spawn(move || {
            loop {
                std::thread::sleep(poll.min(lease / 2));
                renew();
            }
        })?;
    Ok(())
}

/// The central audit index: every origin's entries, copied by its shipper. Its calls block
/// (run them on the blocking pool).
#[derive(Debug)]
pub(crate) struct CentralIndex(Arc<PgStore>);

impl CentralIndex {
    /// Entries of every gateway, newest first: `(origin, seq, body)`.
    pub(crate) fn list(
        &self,
        query: &CentralQuery,
    ) -> Result<Vec<(String, u64, String)>, crate::store::StoreError> {
        self.0.central_audit(query)
    }

    /// Every origin's central copy checked against its latest signed checkpoint.
    pub(crate) fn verify(&self) -> Result<Vec<OriginReport>, crate::store::StoreError> {
        verify_central(&self.0)
    }
}

/// What `/admin/info` shows of the control plane.
#[derive(Debug)]
struct Status {
    backend: &'static str,
    /// The last change record applied here (0 before the first).
    applied_seq: AtomicI64,
    /// Whether the follower's notification connection is up.
    listening: AtomicBool,
    /// Milliseconds between the newest applied change's timestamp and its application here.
    last_lag_ms: AtomicI64,
}

impl Status {
    fn new(backend: &'static str) -> Self {
        Self {
            backend,
            applied_seq: AtomicI64::new(0),
            listening: AtomicBool::new(false),
            last_lag_ms: AtomicI64::new(0),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": self.backend,
            "appliedChange": self.applied_seq.load(Ordering::SeqCst),
            "listening": self.listening.load(Ordering::SeqCst),
            "lastLagMs": self.last_lag_ms.load(Ordering::SeqCst),
        })
    }
}

/// Records read per query while catching up.
const BATCH: usize = 500;

/// What the follower keeps in step with the other gateways.
struct Follower {
    db: Db,
    policies: Policies,
    pg: Arc<PgStore>,
    status: Arc<Status>,
    license: Arc<std::sync::Mutex<Option<LicenseLink>>>,
}

/// Starts following from the newest change record now in the database: what came before is in
/// the snapshot and cache this gateway just built.
async fn spawn_follower(f: Follower, poll: Duration) -> anyhow::Result<()> {
    let from = {
        let pg = Arc::clone(&f.pg);
        tokio::task::spawn_blocking(move || pg.last_change_seq())
            .await?
            .map_err(|e| anyhow::anyhow!("cannot read the control plane's change log: {e}"))?
    };
    f.status.applied_seq.store(from, Ordering::SeqCst);
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("control-plane-follow".into())
        .spawn(move || f.follow(poll, from, &handle))?;
    Ok(())
}

impl Follower {
    fn follow(&self, poll: Duration, mut last: i64, handle: &tokio::runtime::Handle) {
        let mut listener = None;
        // Logged once per outage, not once per retry.
        let mut down = false;
        loop {
            if listener.is_none() {
                listener = self.pg.listener().ok();
                self.status
                    .listening
                    .store(listener.is_some(), Ordering::SeqCst);
            }
            match listener.as_mut().map(|l| l.wait(poll)) {
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    listener = None;
                    self.status.listening.store(false, Ordering::SeqCst);
                    std::thread::sleep(poll);
                }
                None => std::thread::sleep(poll),
            }
            match self.apply(last, handle) {
                Ok(seq) => {
                    if down {
                        tracing::info!(
                            change = seq,
                            "control-plane database back; following again"
                        );
                        down = false;
                    }
                    last = seq;
                    self.status.applied_seq.store(seq, Ordering::SeqCst);
                }
                Err(e) => {
                    if !down {
                        tracing::warn!(error = %e, "cannot read the control plane's changes; decisions go on from the policies and agents held here, retrying");
                        down = true;
                    }
                }
            }
        }
    }

    /// Applies every change record after `last`; returns the last one applied.
    fn apply(
        &self,
        mut last: i64,
        handle: &tokio::runtime::Handle,
    ) -> Result<i64, crate::store::StoreError> {
        let (db, pg) = (&self.db, &self.pg);
        let (mut reload, mut relicense) = (false, false);
        loop {
            let changes = pg.list_changes(&ChangeFilter {
                after_seq: Some(last),
                limit: BATCH,
                ..ChangeFilter::default()
            })?;
            let n = changes.len();
            for c in changes {
                match c.kind.as_str() {
                    "agent" => match pg.get_agent(&c.object_id) {
                        Ok(Some(a)) => db.remember_agent_if_newer(a),
                        Ok(None) => db.forget_agent(&c.object_id),
                        // A revoke or a token re-issue is known without the row: fail closed.
                        Err(_) if c.operation != "create" && c.operation != "update" => {
                            db.forget_agent(&c.object_id)
                        }
                        // Otherwise keep what is cached (the data plane goes on while the
                        // database is down) and read this record again on the next pass.
                        Err(e) => return Err(e),
                    },
                    "policy" => reload = true,
                    "license" => relicense = true,
                    // Alert channels are read from the store for every alert.
                    _ => {}
                }
                if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&c.timestamp) {
                    let lag = chrono::Utc::now().signed_duration_since(at);
                    self.status
                        .last_lag_ms
                        .store(lag.num_milliseconds(), Ordering::SeqCst);
                }
                last = c.seq;
            }
            if n < BATCH {
                break;
            }
        }
        if relicense {
            let link = self
                .license
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(link) = link {
                link.recheck();
            }
        }
        if reload && let Err(e) = handle.block_on(self.policies.reload()) {
            tracing::error!(error = ?e, "cannot rebuild the policy snapshot after another gateway's change; retrying");
            return Err(crate::store::StoreError::Unavailable(
                "the policy snapshot could not be rebuilt".into(),
            ));
        }
        Ok(last)
    }
}

/// Entries copied per transaction into the central index.
const SHIP_BATCH: usize = 2000;

/// Copies this gateway's audit entries into the central index, behind its log: every `every`,
/// or at once while it is catching up. With the database down it keeps its place (the count the
/// central index holds) and resumes from there, so nothing is skipped or copied twice.
async fn spawn_shipper(audit: AuditLog, pg: Arc<PgStore>, every: Duration) -> anyhow::Result<()> {
    // Two gateways copying to one origin would interleave two logs under one name: the origin
    // is claimed under the write lock (two gateways starting at once cannot both find it free),
    // and a gateway whose origin is held under keys this log never had is refused.
    let origin = audit.origin().to_owned();
    let ours = origin_keys(&audit)?;
    let held = {
        let (pg, origin) = (Arc::clone(&pg), origin.clone());
        let keys = serde_json::to_string(&ours)?;
        tokio::task::spawn_blocking(move || pg.claim_audit_origin(&origin, &keys))
            .await?
            .map_err(|e| {
                anyhow::anyhow!("cannot claim the origin in the central audit index: {e}")
            })?
    };
    let theirs: Vec<KeyRange> = serde_json::from_str(&held).unwrap_or_default();
    if let Some(k) = theirs
        .iter()
        .find(|k| !ours.iter().any(|o| o.vkey == k.vkey))
    {
        anyhow::bail!(
            "another gateway already copies its audit log to the central index as origin {origin}, signed with key {}; give each gateway its own AUDIT_ORIGIN (the chart names them after their pods)",
            crate::audit::keys::key_id(&k.vkey)
        );
    }
    std::thread::Builder::new()
        .name("audit-ship".into())
        .spawn(move || {
            let mut down = false;
            let mut progress = Progress::default();
            loop {
                match ship_once(&audit, &pg, &mut progress) {
                    Ok(n) => {
                        if down {
                            tracing::info!("central audit index reachable again; copying");
                            down = false;
                        }
                        if n == SHIP_BATCH {
                            continue;
                        }
                    }
                    Err(e) => {
                        if !down {
                            tracing::warn!(error = %e, "cannot copy audit entries to the central index; the log keeps them, retrying");
                            down = true;
                        }
                    }
                }
                std::thread::sleep(every);
            }
        })?;
    Ok(())
}

/// This log's checkpoint keys with the sizes they sign; the current key alone for a new log.
fn origin_keys(audit: &AuditLog) -> anyhow::Result<Vec<KeyRange>> {
    let mut keys: Vec<KeyRange> = audit
        .reader()
        .keys()?
        .into_iter()
        .map(|k| KeyRange {
            vkey: k.vkey,
            first_size: k.first_size,
            retired_size: k.retired_size,
        })
        .collect();
    if keys.is_empty() {
        keys.push(KeyRange {
            vkey: audit.vkey().to_owned(),
            first_size: 0,
            retired_size: None,
        });
    }
    Ok(keys)
}

/// What the shipper knows it copied, so an idle pass reads only the local index.
struct Progress {
    /// Entries the central index holds; `None` until read from it, and again after a failure
    /// (a copy may have committed although its answer was lost).
    shipped: Option<u64>,
    /// The checkpoint size last copied; `Some(u64::MAX)` at first, so the first pass registers
    /// the origin even with no entry.
    checkpoint: Option<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            shipped: None,
            checkpoint: Some(u64::MAX),
        }
    }
}

fn ship_once(audit: &AuditLog, pg: &PgStore, progress: &mut Progress) -> Result<usize, String> {
    let origin = audit.origin();
    let reader = audit.reader();
    let shipped = match progress.shipped {
        Some(n) => n,
        None => pg.audit_shipped(origin).map_err(|e| e.to_string())?,
    };
    progress.shipped = Some(shipped);
    let rows = reader
        .index_rows(shipped, SHIP_BATCH)
        .map_err(|e| e.to_string())?;
    let copied = rows.last().map_or(shipped, |r| r.seq);
    // The newest signed checkpoint the central index will hold every entry of.
    let checkpoint = reader
        .checkpoints(64)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(size, _)| *size <= copied);
    let checkpoint_size = checkpoint.as_ref().map(|(s, _)| *s);
    if rows.is_empty() && checkpoint_size == progress.checkpoint {
        return Ok(0);
    }
    let keys = serde_json::to_string(&origin_keys(audit).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if let Err(e) = pg.ship_audit(origin, &keys, &rows, checkpoint.as_ref()) {
        progress.shipped = None;
        return Err(e.to_string());
    }
    progress.shipped = Some(copied);
    progress.checkpoint = checkpoint_size;
    Ok(rows.len())
}

/// One origin's verdict in `GET /admin/cluster/audit/verify`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OriginReport {
    pub(crate) origin: String,
    /// Entries the central index holds.
    pub(crate) entries: u64,
    /// The signed checkpoint they were checked against (0: none yet).
    pub(crate) checkpoint_size: u64,
    /// Entries after that checkpoint, not yet covered by a signature.
    pub(crate) awaiting_checkpoint: u64,
    pub(crate) valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) problem: Option<String>,
    /// The origin's checkpoint keys, to compare with the ones the auditor holds.
    pub(crate) vkeys: Vec<String>,
    pub(crate) last_copied: String,
}

/// One checkpoint key of an origin and the sizes it signs, as the central index keeps them.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRange {
    vkey: String,
    first_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired_size: Option<u64>,
}

/// Checks, for every origin, that the central copy of its entries up to its latest signed
/// checkpoint hashes to that checkpoint's root, and that the checkpoint is signed by a key of
/// that origin: a row changed, dropped or added in the database shows as that origin's problem.
fn verify_central(pg: &PgStore) -> Result<Vec<OriginReport>, crate::store::StoreError> {
    use crate::audit::{merkle, note};
    let mut out = Vec::new();
    for o in pg.audit_origins()? {
        let keys: Vec<KeyRange> = serde_json::from_str(&o.keys).unwrap_or_default();
        let mut report = OriginReport {
            origin: o.origin.clone(),
            entries: o.size,
            checkpoint_size: 0,
            awaiting_checkpoint: o.size,
            valid: false,
            problem: None,
            vkeys: keys.iter().map(|k| k.vkey.clone()).collect(),
            last_copied: o.updated_at.clone(),
        };
        if o.size == 0 && o.checkpoint.is_none() && !pg.audit_index_holds(&o.origin)? {
            // Claimed by a gateway that has copied nothing yet: nothing is unsigned. (The row's
            // own count is not trusted alone: with entries in the index, a row set back to 0
            // is a problem like any other.)
            report.valid = true;
            out.push(report);
            continue;
        }
        let Some((size, text)) = &o.checkpoint else {
            report.problem = Some(
                "no signed checkpoint copied yet: none of these entries is covered by a signature"
                    .into(),
            );
            out.push(report);
            continue;
        };
        report.checkpoint_size = *size;
        report.awaiting_checkpoint = o.size.saturating_sub(*size);
        let signed = keys
            .iter()
            .filter(|k| k.first_size <= *size && k.retired_size.is_none_or(|r| *size <= r))
            .find_map(|k| note::verify_checkpoint(&k.vkey, text).ok());
        let problem = match signed {
            None => Some(format!(
                "the checkpoint at size {size} is not signed by a key of this origin"
            )),
            Some(cp) if cp.origin != o.origin || cp.size != *size => Some(format!(
                "the checkpoint copied for size {size} is {}'s checkpoint of size {}",
                cp.origin, cp.size
            )),
            Some(cp) => {
                let mut frontier = merkle::Frontier::default();
                let mut gap = None;
                let mut after = 0;
                while after < *size && gap.is_none() {
                    let chunk = pg.audit_bodies(&o.origin, after, (after + 10_000).min(*size))?;
                    if chunk.is_empty() {
                        gap = Some(after + 1);
                        break;
                    }
                    for (seq, body) in chunk {
                        if seq != after + 1 {
                            gap = Some(after + 1);
                            break;
                        }
                        frontier.push(merkle::leaf_hash(body.as_bytes()));
                        after = seq;
                    }
                }
                match gap {
                    Some(seq) => Some(format!("entry {seq} is missing from the central index")),
                    None if frontier.root() != cp.root => Some(format!(
                        "entries 1 to {size} do not hash to the signed checkpoint's root: the central copy differs from the log"
                    )),
                    None => None,
                }
            }
        };
        report.valid = problem.is_none();
        report.problem = problem;
        out.push(report);
    }
    Ok(out)
}
