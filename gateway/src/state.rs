//! Shared state: configuration, the store, token keys and the active policy snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::error::ApiError;
use crate::jwt::TokenKeys;
use crate::policy::{PolicySet, parse_policy};
use crate::policy_files::FilePolicy;
use crate::store::{Store, StoreError};

/// Cheap to clone; handlers receive it through axum's `State`.
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tokens: TokenKeys,
    /// Policies from `POLICIES_DIR`, replaced whole by the watcher when the files change.
    file_policies: RwLock<Arc<Vec<FilePolicy>>>,
    /// The last `POLICY_VERSION_LIMIT` snapshots: when each became active and what it held.
    history: std::sync::Mutex<std::collections::VecDeque<SnapshotRecord>>,
    pub(crate) audit: AuditLog,
    pub(crate) alerts: crate::alerts::Alerts,
    pub(crate) license: crate::license::Licensing,
    pub(crate) limiter: crate::limits::RateLimiter,
    pub(crate) metrics: crate::metrics::Metrics,
    /// The egress proxy's allowlist, when the proxy is on (`egress.rs`).
    pub(crate) egress: Option<crate::egress::Egress>,
    /// Refusals before evaluation, counted per window (`refusals.rs`).
    pub(crate) refusals: crate::refusals::Refusals,
    /// Agents as last read or written, for the data plane's per-request lookup. A write through
    /// this process updates or drops the entry right after its commit, so a revoke or a token
    /// re-issue acts on the next request; a write through another gateway on the same
    /// PostgreSQL control plane does so once this gateway's follower applies it (`cluster.rs`).
    agents: RwLock<std::collections::HashMap<String, Arc<crate::store::AgentRecord>>>,
    /// Pooled client for `/proxy/*` forwarding.
    pub(crate) upstream: reqwest::Client,
    snapshot: RwLock<Arc<PolicySet>>,
    snapshot_version: AtomicU64,
    /// Serializes snapshot rebuilds so an older rebuild never replaces a newer one.
    rebuild: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    pub(crate) started: Instant,
    /// Signs exported policy bundles cosign-style, when configured.
    pub(crate) bundle_p256: Option<p256::ecdsa::SigningKey>,
    /// Signs exported policy bundles (minisign); a key of its own, not the audit key. None in
    /// a sidecar, which exports no bundles.
    pub(crate) bundle_key: Option<Arc<crate::audit::note::LogKey>>,
    /// Set when this process is an agent's guardian sidecar (`sidecar.rs`).
    pub(crate) sidecar: Option<crate::sidecar::Sidecar>,
    /// The version of the signed policy bundle in force, if one was loaded.
    bundle_version: Arc<std::sync::Mutex<Option<u64>>>,
    /// The SIEM forwarder's progress (`siem.rs`), when SIEM egress is on.
    pub(crate) siem: Option<crate::siem::SharedStatus>,
    /// What only a shared PostgreSQL control plane does (`cluster.rs`).
    pub(crate) control_plane: Arc<dyn crate::cluster::ControlPlane>,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
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

/// The control plane: its store, and what it does beyond the store (alone, or shared on
/// PostgreSQL).
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) control_plane: Arc<dyn crate::cluster::ControlPlane>,
}

/// The parts a gateway has only when configured.
#[derive(Debug, Default)]
pub(crate) struct Optional {
    /// Signs exported policy bundles cosign-style.
    pub(crate) bundle_p256: Option<p256::ecdsa::SigningKey>,
    /// Signs exported policy bundles (minisign).
    pub(crate) bundle_key: Option<Arc<crate::audit::note::LogKey>>,
    pub(crate) egress: Option<crate::egress::Egress>,
    /// Shared with the policy sources' loader (`policy_files::Sources`).
    pub(crate) bundle_version: Arc<std::sync::Mutex<Option<u64>>>,
    /// The SIEM forwarder's progress, when SIEM egress is on.
    pub(crate) siem: Option<crate::siem::SharedStatus>,
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        backend: Backend,
        file_policies: Vec<FilePolicy>,
        audit: AuditLog,
        alerts: crate::alerts::Alerts,
        license: crate::license::Licensing,
        optional: Optional,
    ) -> Self {
        let Backend {
            store,
            control_plane,
        } = backend;
        let Optional {
            bundle_p256,
            bundle_key,
            egress,
            bundle_version,
            siem,
        } = optional;
        let sidecar = config.sidecar.clone().map(crate::sidecar::Sidecar::new);
        let tokens = TokenKeys::new(&config.jwt_secret, config.jwt_ttl);
        let config_proxy_timeout = config.proxy_timeout;
        let extra_roots = config.extra_roots.clone();
        let refusal_window = config.audit_refusal_window;
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                tokens,
                file_policies: RwLock::new(Arc::new(file_policies)),
                history: std::sync::Mutex::new(std::collections::VecDeque::new()),
                audit,
                alerts,
                license,
                limiter: crate::limits::RateLimiter::default(),
                metrics: crate::metrics::Metrics::default(),
                refusals: crate::refusals::Refusals::new(refusal_window),
                egress,
                agents: RwLock::new(std::collections::HashMap::new()),
                upstream: crate::routes::upstream_client(config_proxy_timeout, &extra_roots),
                snapshot: RwLock::new(Arc::new(PolicySet::default())),
                snapshot_version: AtomicU64::new(0),
                rebuild: tokio::sync::Mutex::new(()),
                ready: AtomicBool::new(false),
                started: Instant::now(),
                bundle_p256,
                bundle_key,
                sidecar,
                bundle_version,
                siem,
                control_plane,
            }),
        }
    }

    /// A digest of the policy set in force: SHA-256 over the sorted `name<TAB>digest` lines of
    /// its policies (API-managed and file or bundle ones), so a sidecar and its control plane
    /// can tell whether they enforce the same policies whatever versions they number.
    pub(crate) async fn policy_set_digest(&self) -> Result<String, ApiError> {
        let mut lines: Vec<String> = self
            .db(|s| s.list_policies())
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
        lines.extend(self.file_policies().iter().map(|f| {
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
            .inner
            .bundle_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn license(&self) -> &crate::license::Licensing {
        &self.inner.license
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs a store call on the blocking pool (SQLite fsyncs must not stall the async workers).
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    pub(crate) fn snapshot(&self) -> Arc<PolicySet> {
        Arc::clone(
            &self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Rebuilds the active policy set from the store and the policy files.
    pub(crate) async fn reload_policies(&self) -> Result<(), ApiError> {
        let _guard = self.inner.rebuild.lock().await;
        let stored = self.db(|s| s.list_policies()).await?;
        let files = self.file_policies();
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
        let version = self.inner.snapshot_version.fetch_add(1, Ordering::SeqCst) + 1;
        let set = Arc::new(PolicySet::new(version, docs));
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner()) = set;
        held.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut history = self.inner.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push_back(SnapshotRecord {
            version,
            activated_at: crate::clock::now_rfc3339(),
            policies: held,
        });
        while history.len() > self.inner.config.policy_version_limit.max(1) {
            history.pop_front();
        }
        Ok(())
    }

    pub(crate) fn file_policies(&self) -> Arc<Vec<FilePolicy>> {
        Arc::clone(
            &self
                .inner
                .file_policies
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Replaces the file policies and rebuilds the snapshot.
    pub(crate) async fn replace_file_policies(
        &self,
        files: Vec<FilePolicy>,
    ) -> Result<(), ApiError> {
        *self
            .inner
            .file_policies
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(files);
        self.reload_policies().await
    }

    /// Retained snapshots, oldest first.
    pub(crate) fn history(&self) -> Vec<SnapshotRecord> {
        self.inner
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// An agent by id (revoked ones included), from the cache or the store.
    pub(crate) async fn agent(
        &self,
        id: &str,
    ) -> Result<Option<Arc<crate::store::AgentRecord>>, ApiError> {
        if let Some(a) = self
            .inner
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(Arc::clone(a)));
        }
        let key = id.to_owned();
        let found = self.db(move |s| s.get_agent(&key)).await?.map(Arc::new);
        if let Some(a) = &found {
            let mut cache = self.inner.agents.write().unwrap_or_else(|p| p.into_inner());
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
    ) -> Result<Option<Arc<crate::store::AgentRecord>>, ApiError> {
        Ok(self.agent(id).await?.filter(|a| a.revoked_at.is_none()))
    }

    pub(crate) fn remember_agent(&self, a: &crate::store::AgentRecord) {
        self.inner
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(a.id.clone(), Arc::new(a.clone()));
    }

    /// Caches `a` unless the cache holds a newer revision (a write here that raced the read).
    pub(crate) fn remember_agent_if_newer(&self, a: crate::store::AgentRecord) {
        let mut cache = self.inner.agents.write().unwrap_or_else(|p| p.into_inner());
        if cache.get(&a.id).is_none_or(|c| c.revision <= a.revision) {
            cache.insert(a.id.clone(), Arc::new(a));
        }
    }

    pub(crate) fn forget_agent(&self, id: &str) {
        self.inner
            .agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(crate) fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }
}
