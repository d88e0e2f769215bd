//! The gateway's state, in narrow parts by concern. A handler asks axum for the parts it uses
//! (`State<Db>`, `State<AuditLog>`, …; each part implements `FromRef<AppState>`), not for the
//! whole:
//!
//! - `Arc<Config>`: the checked configuration;
//! - [`Db`]: the store (its calls run on the blocking pool) and the agent cache in front of it;
//! - [`Policies`]: the active policy snapshot, its history, the file and bundle policies;
//! - `AuditLog`: the audit writer and its readers (`audit/`);
//! - `Arc<dyn ControlPlane>`: what only a shared PostgreSQL control plane does (`cluster.rs`);
//! - `Alerts`, `Arc<Licensing>`, `Arc<Metrics>`, `Arc<TokenKeys>`, [`Siem`], [`BundleSigning`],
//!   [`Readiness`], and on a sidecar `Option<Arc<Sidecar>>`.
//!
//! The handlers that may record a decision or a refusal (`/proxy/check`, `/proxy/*`, the
//! batch, the sidecar's `/enforce` and `/enforce/batch`, the sidecar heartbeat and the audit
//! ingest) and the background tasks take the whole `AppState`: `governance.rs` uses nearly
//! every part. `AppState` is one `Arc` (it derefs to [`Parts`]), so cloning it per request
//! costs what it did as one struct.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::FromRef;

use crate::audit::AuditLog;
use crate::cluster::ControlPlane;
use crate::config::Config;
use crate::error::ApiError;
use crate::jwt::TokenKeys;
use crate::license::Licensing;
use crate::metrics::Metrics;
use crate::policy::{PolicySet, parse_policy};
use crate::policy_files::FilePolicy;
use crate::store::{AgentRecord, Store, StoreError};

/// Cheap to clone (one `Arc`); handlers take its parts through axum's `State`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts, one field per concern. `pub` only so `AppState` can deref to it; it is not
/// nameable outside the crate.
#[derive(Debug)]
pub struct Parts {
    pub(crate) config: Arc<Config>,
    pub(crate) db: Db,
    pub(crate) policies: Policies,
    pub(crate) audit: AuditLog,
    pub(crate) alerts: crate::alerts::Alerts,
    /// The SIEM forwarder's progress (`siem.rs`), when SIEM egress is on.
    pub(crate) siem: Siem,
    pub(crate) license: Arc<Licensing>,
    /// What only a shared PostgreSQL control plane does (`cluster.rs`).
    pub(crate) control_plane: Arc<dyn ControlPlane>,
    pub(crate) tokens: Arc<TokenKeys>,
    pub(crate) limiter: crate::limits::RateLimiter,
    pub(crate) metrics: Arc<Metrics>,
    /// Refusals before evaluation, counted per window (`refusals.rs`).
    pub(crate) refusals: crate::refusals::Refusals,
    /// The egress proxy's allowlist, when the proxy is on (`egress.rs`).
    pub(crate) egress: Option<crate::egress::Egress>,
    /// Pooled client for `/proxy/*` forwarding.
    pub(crate) upstream: reqwest::Client,
    /// Set when this process is an agent's guardian sidecar (`sidecar.rs`).
    pub(crate) sidecar: Option<Arc<crate::sidecar::Sidecar>>,
    pub(crate) bundle_signing: Arc<BundleSigning>,
    pub(crate) readiness: Readiness,
}

/// Each part is cheap to clone (an `Arc` inside), so `State<Part>` costs a reference count.
macro_rules! parts {
    ($($part:ty => $field:ident),* $(,)?) => {
        $(impl FromRef<AppState> for $part {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        })*
    };
}

parts! {
    Arc<Config> => config,
    Db => db,
    Policies => policies,
    AuditLog => audit,
    crate::alerts::Alerts => alerts,
    Siem => siem,
    Arc<Licensing> => license,
    Arc<dyn ControlPlane> => control_plane,
    Arc<TokenKeys> => tokens,
    Arc<Metrics> => metrics,
    Arc<BundleSigning> => bundle_signing,
    Readiness => readiness,
    Option<Arc<crate::sidecar::Sidecar>> => sidecar,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The SIEM forwarder's progress, when SIEM egress is on.
pub(crate) type Siem = Option<crate::siem::SharedStatus>;

/// The keys that sign exported policy bundles.
#[derive(Debug, Default)]
pub(crate) struct BundleSigning {
    /// Signs them cosign-style, when configured.
    pub(crate) p256: Option<p256::ecdsa::SigningKey>,
    /// Signs them (minisign); a key of its own, not the audit key. None in a sidecar, which
    /// exports no bundles.
    pub(crate) key: Option<Arc<crate::audit::note::LogKey>>,
}

/// Whether start-up finished (`/ready`), and since when the process runs.
#[derive(Clone, Debug)]
pub(crate) struct Readiness {
    ready: Arc<AtomicBool>,
    pub(crate) started: Instant,
}

impl Readiness {
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The store, and the agents as last read or written, for the data plane's per-request lookup.
/// A write through this process updates or drops the cached agent right after its commit, so a
/// revoke or a token re-issue acts on the next request; a write through another gateway on the
/// same PostgreSQL control plane does so once this gateway's follower applies it (`cluster.rs`).
#[derive(Clone, Debug)]
pub(crate) struct Db {
    store: Arc<dyn Store>,
    agents: Arc<RwLock<std::collections::HashMap<String, Arc<AgentRecord>>>>,
}

/// One policy snapshot in the retained history.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotRecord {
    pub(crate) version: u64,
    pub(crate) activated_at: String,
    /// `{name, source, digest}` of every policy in it.
    pub(crate) policies: Vec<serde_json::Value>,
}

/// The policies in force: the immutable snapshot the engine evaluates, rebuilt from the store
/// and the policy files, and the retained history of snapshots.
#[derive(Clone, Debug)]
pub(crate) struct Policies(Arc<PolicyState>);

#[derive(Debug)]
struct PolicyState {
    db: Db,
    /// Policies from `POLICIES_DIR`, replaced whole by the watcher when the files change.
    files: RwLock<Arc<Vec<FilePolicy>>>,
    /// The last `POLICY_VERSION_LIMIT` snapshots: when each became active and what it held.
    history: std::sync::Mutex<std::collections::VecDeque<SnapshotRecord>>,
    version_limit: usize,
    snapshot: RwLock<Arc<PolicySet>>,
    snapshot_version: AtomicU64,
    /// Serializes snapshot rebuilds so an older rebuild never replaces a newer one.
    rebuild: tokio::sync::Mutex<()>,
    /// The version of the signed policy bundle in force, if one was loaded; shared with the
    /// policy sources' loader (`policy_files::Sources`).
    bundle_version: Arc<std::sync::Mutex<Option<u64>>>,
}

/// The control plane: its store, and what it does beyond the store (alone, or shared on
/// PostgreSQL).
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) control_plane: Arc<dyn ControlPlane>,
}

/// The parts a gateway has only when configured.
#[derive(Debug, Default)]
pub(crate) struct Optional {
    pub(crate) bundle_signing: BundleSigning,
    pub(crate) egress: Option<crate::egress::Egress>,
    /// Shared with the policy sources' loader (`policy_files::Sources`).
    pub(crate) bundle_version: Arc<std::sync::Mutex<Option<u64>>>,
    /// The SIEM forwarder's progress, when SIEM egress is on.
    pub(crate) siem: Siem,
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        backend: Backend,
        file_policies: Vec<FilePolicy>,
        audit: AuditLog,
        alerts: crate::alerts::Alerts,
        license: Licensing,
        optional: Optional,
    ) -> Self {
        let Backend {
            store,
            control_plane,
        } = backend;
        let Optional {
            bundle_signing,
            egress,
            bundle_version,
            siem,
        } = optional;
        let sidecar = config
            .sidecar
            .clone()
            .map(|c| Arc::new(crate::sidecar::Sidecar::new(c)));
        let tokens = TokenKeys::new(&config.jwt_secret, config.jwt_ttl);
        let db = Db {
            store,
            agents: Arc::default(),
        };
        let policies = Policies(Arc::new(PolicyState {
            db: db.clone(),
            files: RwLock::new(Arc::new(file_policies)),
            history: std::sync::Mutex::new(std::collections::VecDeque::new()),
            version_limit: config.policy_version_limit.max(1),
            snapshot: RwLock::new(Arc::new(PolicySet::default())),
            snapshot_version: AtomicU64::new(0),
            rebuild: tokio::sync::Mutex::new(()),
            bundle_version,
        }));
        Self(Arc::new(Parts {
            upstream: crate::routes::upstream_client(config.proxy_timeout, &config.extra_roots),
            refusals: crate::refusals::Refusals::new(config.audit_refusal_window),
            config: Arc::new(config),
            db,
            policies,
            audit,
            alerts,
            siem,
            license: Arc::new(license),
            control_plane,
            tokens: Arc::new(tokens),
            limiter: crate::limits::RateLimiter::default(),
            metrics: Arc::default(),
            egress,
            sidecar,
            bundle_signing: Arc::new(bundle_signing),
            readiness: Readiness {
                ready: Arc::default(),
                started: Instant::now(),
            },
        }))
    }
}

impl Db {
    /// Runs a store call on the blocking pool (SQLite fsyncs must not stall the async workers).
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    /// An agent by id (revoked ones included), from the cache or the store.
    pub(crate) async fn agent(&self, id: &str) -> Result<Option<Arc<AgentRecord>>, ApiError> {
        if let Some(a) = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(Arc::clone(a)));
        }
        let key = id.to_owned();
        let found = self.run(move |s| s.get_agent(&key)).await?.map(Arc::new);
        if let Some(a) = &found {
            let mut cache = self.agents.write().unwrap_or_else(|p| p.into_inner());
            // Never replace a newer copy a concurrent write put there.
            let keep = cache.get(id).is_some_and(|c| c.revision >= a.revision);
            if !keep {
                cache.insert(a.id.clone(), Arc::clone(a));
            }
        }
        Ok(found)
    }

    /// An agent that is not revoked, from the cache or the store.
    pub(crate) async fn active_agent(
        &self,
        id: &str,
    ) -> Result<Option<Arc<AgentRecord>>, ApiError> {
        Ok(self.agent(id).await?.filter(|a| a.revoked_at.is_none()))
    }

    pub(crate) fn remember_agent(&self, a: &AgentRecord) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(a.id.clone(), Arc::new(a.clone()));
    }

    /// Caches `a` unless the cache holds a newer revision (a write here that raced the read).
    pub(crate) fn remember_agent_if_newer(&self, a: AgentRecord) {
        let mut cache = self.agents.write().unwrap_or_else(|p| p.into_inner());
        if cache.get(&a.id).is_none_or(|c| c.revision <= a.revision) {
            cache.insert(a.id.clone(), Arc::new(a));
        }
    }

    pub(crate) fn forget_agent(&self, id: &str) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

impl Policies {
    /// A digest of the policy set in force: SHA-256 over the sorted `name<TAB>digest` lines of
    /// its policies (API-managed and file or bundle ones), so a sidecar and its control plane
    /// can tell whether they enforce the same policies whatever versions they number.
    pub(crate) async fn digest(&self) -> Result<String, ApiError> {
        let mut lines: Vec<String> = self
            .0
            .db
            .run(|s| s.list_policies())
            .await?
            .into_iter()
            .filter(|p| parse_policy(&p.content).doc.is_some())
            .map(|p| {
                format!(
                    "{}\t{}\n",
                    p.name,
                    crate::routes::digest(p.content.as_bytes())
                )
            })
            .collect();
        lines.extend(self.files().iter().map(|f| {
            format!(
                "{}\t{}\n",
                f.name,
                crate::routes::digest(f.content.as_bytes())
            )
        }));
        lines.sort();
        Ok(crate::routes::digest(lines.concat().as_bytes()))
    }

    /// The version of the signed policy bundle in force, if one is.
    pub(crate) fn bundle_version(&self) -> Option<u64> {
        *self
            .0
            .bundle_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Arc<PolicySet> {
        Arc::clone(&self.0.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Rebuilds the active policy set from the store and the policy files.
    pub(crate) async fn reload(&self) -> Result<(), ApiError> {
        let _guard = self.0.rebuild.lock().await;
        let stored = self.0.db.run(|s| s.list_policies()).await?;
        let files = self.files();
        let mut docs = Vec::with_capacity(stored.len() + files.len());
        let mut held = Vec::with_capacity(stored.len() + files.len());
        for p in stored {
            match parse_policy(&p.content).doc {
                Some(doc) => {
                    held.push(serde_json::json!({"name": p.name, "source": "api", "id": p.id, "digest": crate::routes::digest(p.content.as_bytes())}));
                    docs.push((p.name, Arc::new(doc)));
                }
                None => {
                    tracing::error!(policy = %p.name, "stored policy no longer parses; it is inactive until fixed")
                }
            }
        }
        for f in files.iter() {
            held.push(serde_json::json!({"name": f.name, "source": "file", "digest": crate::routes::digest(f.content.as_bytes())}));
            docs.push((f.name.clone(), Arc::clone(&f.doc)));
        }
        let version = self.0.snapshot_version.fetch_add(1, Ordering::SeqCst) + 1;
        let set = Arc::new(PolicySet::new(version, docs));
        *self.0.snapshot.write().unwrap_or_else(|p| p.into_inner()) = set;
        held.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut history = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push_back(SnapshotRecord {
            version,
            activated_at: crate::clock::now_rfc3339(),
            policies: held,
        });
        while history.len() > self.0.version_limit {
            history.pop_front();
        }
        Ok(())
    }

    /// The policies from `POLICIES_DIR` or the signed bundle.
    pub(crate) fn files(&self) -> Arc<Vec<FilePolicy>> {
        Arc::clone(&self.0.files.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the file policies and rebuilds the snapshot.
    pub(crate) async fn replace_files(&self, files: Vec<FilePolicy>) -> Result<(), ApiError> {
        *self.0.files.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(files);
        self.reload().await
    }

    /// Retained snapshots, oldest first.
    pub(crate) fn history(&self) -> Vec<SnapshotRecord> {
        self.0
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
