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
    pub(crate) file_policies: Vec<FilePolicy>,
    pub(crate) audit: AuditLog,
    pub(crate) alerts: crate::alerts::Alerts,
    pub(crate) limiter: crate::limits::RateLimiter,
    pub(crate) metrics: crate::metrics::Metrics,
    /// Pooled client for `/proxy/*` forwarding.
    pub(crate) upstream: reqwest::Client,
    snapshot: RwLock<Arc<PolicySet>>,
    snapshot_version: AtomicU64,
    /// Serializes snapshot rebuilds so an older rebuild never replaces a newer one.
    rebuild: tokio::sync::Mutex<()>,
    ready: AtomicBool,
    pub(crate) started: Instant,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        store: Arc<dyn Store>,
        file_policies: Vec<FilePolicy>,
        audit: AuditLog,
        alerts: crate::alerts::Alerts,
    ) -> Self {
        let tokens = TokenKeys::new(&config.jwt_secret, config.jwt_ttl);
        let config_proxy_timeout = config.proxy_timeout;
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                tokens,
                file_policies,
                audit,
                alerts,
                limiter: crate::limits::RateLimiter::default(),
                metrics: crate::metrics::Metrics::default(),
                upstream: crate::routes::upstream_client(config_proxy_timeout),
                snapshot: RwLock::new(Arc::new(PolicySet::default())),
                snapshot_version: AtomicU64::new(0),
                rebuild: tokio::sync::Mutex::new(()),
                ready: AtomicBool::new(false),
                started: Instant::now(),
            }),
        }
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
        let mut docs = Vec::with_capacity(stored.len() + self.inner.file_policies.len());
        for p in stored {
            match parse_policy(&p.content).doc {
                Some(doc) => docs.push((p.name, Arc::new(doc))),
                None => {
                    tracing::error!(policy = %p.name, "stored policy no longer parses; it is inactive until fixed")
                }
            }
        }
        for f in &self.inner.file_policies {
            docs.push((f.name.clone(), Arc::clone(&f.doc)));
        }
        let version = self.inner.snapshot_version.fetch_add(1, Ordering::SeqCst) + 1;
        let set = Arc::new(PolicySet::new(version, docs));
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner()) = set;
        Ok(())
    }

    pub(crate) fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }
}
