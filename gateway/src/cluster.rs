//! Several gateways on one PostgreSQL control plane: each follows the changes the others make.
//!
//! A gateway keeps two things in memory that another gateway's write makes stale: the policy
//! snapshot and the agent cache. The follower thread reads the `changes` table after the last
//! record it applied (the store commits records in `seq` order, see `store/postgres.rs`) and, per
//! record, rereads the agent it names or rebuilds the snapshot once for any number of policy
//! records. It wakes on the `NOTIFY` every write sends, and every `CONTROL_PLANE_POLL_MS` in any
//! case, so a change acts on every gateway within that interval even when a notification is lost
//! or the listening connection is down. Records this gateway wrote come back too; applying them
//! again is harmless (the same agent is reread, the same policies rebuilt).
//!
//! When the database is down, the follower keeps its place and retries every interval; the data
//! plane goes on from the snapshot and the cache it has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::state::AppState;
use crate::store::{ChangeFilter, PgStore, Store};

/// What `/admin/info` shows of the control plane.
#[derive(Debug)]
pub(crate) struct Status {
    pub(crate) backend: &'static str,
    /// The last change record applied here (0 before the first).
    pub(crate) applied_seq: AtomicI64,
    /// Whether the follower's notification connection is up.
    pub(crate) listening: AtomicBool,
    /// Milliseconds between the newest applied change's timestamp and its application here.
    pub(crate) last_lag_ms: AtomicI64,
}

impl Status {
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            backend,
            applied_seq: AtomicI64::new(0),
            listening: AtomicBool::new(false),
            last_lag_ms: AtomicI64::new(0),
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
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

/// Starts following from the newest change record now in the database: what came before is in
/// the snapshot and cache this gateway just built.
pub(crate) async fn spawn_follower(
    state: AppState,
    pg: Arc<PgStore>,
    poll: Duration,
) -> anyhow::Result<()> {
    let from = {
        let pg = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || pg.last_change_seq())
            .await?
            .map_err(|e| anyhow::anyhow!("cannot read the control plane's change log: {e}"))?
    };
    state
        .inner
        .control_plane
        .applied_seq
        .store(from, Ordering::SeqCst);
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("control-plane-follow".into())
        .spawn(move || follow(&state, &pg, poll, from, &handle))?;
    Ok(())
}

fn follow(
    state: &AppState,
    pg: &PgStore,
    poll: Duration,
    mut last: i64,
    handle: &tokio::runtime::Handle,
) {
    let status = &state.inner.control_plane;
    let mut listener = None;
    // Logged once per outage, not once per retry.
    let mut down = false;
    loop {
        if listener.is_none() {
            listener = pg.listener().ok();
            status.listening.store(listener.is_some(), Ordering::SeqCst);
        }
        match listener.as_mut().map(|l| l.wait(poll)) {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                listener = None;
                status.listening.store(false, Ordering::SeqCst);
                std::thread::sleep(poll);
            }
            None => std::thread::sleep(poll),
        }
        match apply(state, pg, last, handle) {
            Ok(seq) => {
                if down {
                    tracing::info!(change = seq, "control-plane database back; following again");
                    down = false;
                }
                last = seq;
                status.applied_seq.store(seq, Ordering::SeqCst);
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
    state: &AppState,
    pg: &PgStore,
    mut last: i64,
    handle: &tokio::runtime::Handle,
) -> Result<i64, crate::store::StoreError> {
    let mut policies = false;
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
                    Ok(Some(a)) => state.remember_agent_if_newer(a),
                    // Fail closed: a later request reads the store again, or is refused.
                    Ok(None) | Err(_) => state.forget_agent(&c.object_id),
                },
                "policy" => policies = true,
                // Alert channels are read from the store for every alert.
                _ => {}
            }
            if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&c.timestamp) {
                let lag = chrono::Utc::now().signed_duration_since(at);
                state
                    .inner
                    .control_plane
                    .last_lag_ms
                    .store(lag.num_milliseconds(), Ordering::SeqCst);
            }
            last = c.seq;
        }
        if n < BATCH {
            break;
        }
    }
    if policies && let Err(e) = handle.block_on(state.reload_policies()) {
        tracing::error!(error = ?e, "cannot rebuild the policy snapshot after another gateway's change; retrying");
        return Err(crate::store::StoreError::Unavailable(
            "the policy snapshot could not be rebuilt".into(),
        ));
    }
    Ok(last)
}
