//! `meshguard-gateway`: a MeshGuard-compatible governance gateway.
//!
//! The control plane (agents, policies, alert channels, change records) over an embedded SQLite
//! store or a PostgreSQL one shared by several gateways, agent identity as HS256 JWTs, and the policy engine behind `GET /proxy/check`. The wire
//! contract is `shared/reference/meshguard-api.md`; the JSON types live in `meshguard-api`.

mod alerts;
mod approvers;
mod audit;
mod auth;
#[doc(hidden)]
pub mod bench_support;
mod bundle;
mod clock;
mod cluster;
mod config;
mod destinations;
mod egress;
mod error;
mod governance;
mod ids;
mod jwt;
mod license;
mod limits;
mod listen;
mod metrics;
mod pkcs11;
use meshguard_policy as policy;
mod policy_files;
mod redaction;
mod refusals;
mod restored;
mod routes;
mod settings_entry;
mod sidecar;
mod siem;
mod signed_file;
mod state;
mod store;
mod tls;
mod witness_push;

use std::sync::Arc;

pub use config::{Args, Config, ConfigError, Mode};
pub use listen::Limits as ConnectionLimits;
pub use routes::app;
pub use sidecar::SidecarConfig;
pub use state::AppState;

/// Replaces the audit checkpoint key of the log at `config.db_path` and records the rotation in
/// the log (`--rotate-audit-key`); the gateway must be stopped (the database lock says so).
/// Returns a JSON report: old and new verifier keys, the handoff checkpoint.
pub fn rotate_audit_key(
    config: &Config,
    lost: bool,
    next_uri: Option<&str>,
) -> anyhow::Result<String> {
    // Takes the database lock and applies migrations; held until the rotation is done.
    let store = store::SqliteStore::open(&config.db_path)?;
    let done = audit::keys::rotate(
        store.path(),
        &config.audit_log_dir,
        &config.audit_key(),
        &config.audit_origin,
        lost,
        next_uri,
    )?;
    drop(store);
    Ok(serde_json::to_string_pretty(&done)?)
}

/// Verifies a signed policy bundle as the gateway and the sidecar load it, for the sidecar's
/// init container (`--check-policy-bundle`): what it holds, or why it is refused.
pub fn check_policy_bundle(
    bundle: &std::path::Path,
    pubkey: &std::path::Path,
) -> Result<String, String> {
    let (version, policies) = bundle::load(bundle, pubkey).map_err(|e| e.to_string())?;
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "policy bundle {} verified with {}: version {version}, {} policies ({})",
        bundle.display(),
        pubkey.display(),
        policies.len(),
        names.join(", ")
    ))
}

/// The control plane (its store, and what it does beyond the store) and the local SQLite file
/// (the audit index).
type Opened = (state::Backend, std::path::PathBuf);

/// Opens the store, loads the policies and returns the state the router serves.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    prepare_with(config, true).await
}

/// [`prepare`], with decisions recorded in the audit log or (for `bench_support` only) not.
async fn prepare_with(config: Config, record_decisions: bool) -> anyhow::Result<AppState> {
    let (backend, db_path) = open_stores(&config).await?;
    let audit = open_audit(&config, db_path, record_decisions)?;
    let alerts = alerts::Alerts::start(
        config.alerts.clone(),
        Arc::clone(&backend.store),
        Some(audit.clone()),
    );
    let sources = policy_files::Sources {
        dir: config.policies_dir.clone(),
        bundle: config
            .policy_bundle
            .clone()
            .zip(config.policy_bundle_pubkey.clone()),
        bundle_version: Arc::default(),
    };
    let files = sources.load(&[], &alerts);
    tracing::info!(dir = %config.policies_dir.display(), count = files.len(), "policy files loaded");
    let license = {
        // The installation's records may be in the control-plane database: read off the runtime.
        let (config, records) = (config.clone(), backend.control_plane.license_records());
        tokio::task::spawn_blocking(move || license::Licensing::open(&config, records)).await??
    };
    let (bundle_p256, bundle_key) = open_bundle_keys(&config)?;
    let egress = open_egress(&config)?;
    if let Some(list) = &config.change_approvers {
        list.not_older_than_seen(&config.db_path.with_file_name("change-approvers.version"))
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    let siem = config.siem.as_ref().map(siem::open).transpose()?;
    let state = AppState::new(
        config,
        backend,
        files,
        audit,
        alerts,
        license,
        state::Optional {
            bundle_signing: state::BundleSigning {
                p256: bundle_p256,
                key: bundle_key,
            },
            egress,
            bundle_version: Arc::clone(&sources.bundle_version),
            siem: siem.clone(),
        },
    );
    start(&state, sources, siem).await?;
    if state.sidecar.is_none() {
        // A restore this start follows, then the settings in force, in the signed log, before
        // the first decision.
        restored::record_if_restored(&state).await?;
        settings_entry::record(&state, "start").await?;
    }
    state.readiness.set_ready();
    Ok(state)
}

/// Opens the control-plane store: the local SQLite file alone, or PostgreSQL with the local
/// file kept for the audit-log index. The secrets' key is checked against what the store
/// sealed before.
async fn open_stores(config: &Config) -> anyhow::Result<Opened> {
    let path = config.db_path.clone();
    let secrets_key = store::KeySource {
        file: config.secrets_key_file.clone(),
        uri: config.secrets_key_uri.clone(),
        value: config.secrets_key.clone(),
    };
    let database_url = config.database_url.clone();
    let ca_bundle = config.ca_bundle_file.clone();
    let poll = config.control_plane_poll;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Opened> {
        let mut local = store::SqliteStore::open(&path)?;
        let db_path = local.path().to_owned();
        let Some(url) = database_url else {
            local
                .seal_secrets_with(&secrets_key)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(db = %db_path.display(), "database open (SQLite, WAL, synchronous=FULL)");
            let backend = state::Backend {
                store: Arc::new(local),
                control_plane: Arc::new(cluster::Standalone),
            };
            return Ok((backend, db_path));
        };
        let mut pg = store::PgStore::open(&url, local, ca_bundle.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(moved) = pg
            .adopt_local_control_plane()
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            let moved: Vec<String> = moved.iter().map(|(t, n)| format!("{t}: {n}")).collect();
            tracing::warn!(database = pg.shown(), moved = %moved.join(", "), "the control-plane database was empty: this gateway's SQLite control plane was copied into it (a site moving to PostgreSQL)");
        }
        pg.seal_secrets_with(&secrets_key)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(database = pg.shown(), local = %db_path.display(), "control plane open (PostgreSQL); the audit-log index stays in the local SQLite file");
        let pg = Arc::new(pg);
        let backend = state::Backend {
            control_plane: Arc::new(cluster::Shared::new(Arc::clone(&pg), poll)),
            store: pg,
        };
        Ok((backend, db_path))
    })
    .await?
}

/// Opens the audit log (its index beside the store), discarding decisions only in a
/// benchmark build that measures what recording them costs.
fn open_audit(
    config: &Config,
    db_path: std::path::PathBuf,
    record_decisions: bool,
) -> anyhow::Result<audit::AuditLog> {
    let audit = audit::AuditLog::open(audit::AuditConfig {
        db_path,
        log_dir: config.audit_log_dir.clone(),
        key: config.audit_key(),
        origin: config.audit_origin.clone(),
        checkpoint_every: config.audit_checkpoint_every,
        checkpoint_interval: config.audit_checkpoint_interval,
        redaction: config.audit_redaction,
    })?;
    let audit = if record_decisions {
        audit
    } else {
        tracing::warn!(
            "decisions are NOT recorded: a benchmark build measuring what the audit log costs"
        );
        audit.discarding()
    };
    tracing::info!(
        origin = audit.origin(),
        vkey = audit.vkey(),
        "audit log open"
    );
    Ok(audit)
}

/// The keys that sign exported policy bundles: the optional P-256 key, and the note key (none
/// in a sidecar, which exports nothing).
fn open_bundle_keys(
    config: &Config,
) -> anyhow::Result<(
    Option<p256::ecdsa::SigningKey>,
    Option<Arc<audit::note::LogKey>>,
)> {
    let bundle_p256 = config
        .policy_bundle_signing_key
        .as_deref()
        .map(|p| bundle::load_p256(p, config.policy_bundle_signing_key_passphrase.as_deref()))
        .transpose()?;
    if config.sidecar.is_some() {
        return Ok((bundle_p256, None));
    }
    let key = match &config.policy_bundle_key_uri {
        Some(uri) => audit::note::LogKey::from_token(uri, "policy-bundles")?,
        None => {
            audit::note::LogKey::load_or_create(&config.policy_bundle_key_file, "policy-bundles")?
        }
    };
    tracing::info!(key = %key.location(), "policy-bundle signing key open");
    Ok((bundle_p256, Some(Arc::new(key))))
}

/// The egress proxy's signed allowlist, when the proxy is on.
fn open_egress(config: &Config) -> anyhow::Result<Option<egress::Egress>> {
    match (
        config.egress_proxy_port,
        &config.egress_allowlist,
        &config.egress_allowlist_pubkey,
    ) {
        (Some(_), Some(list), Some(key)) => Ok(Some(egress::Egress::open(
            list,
            key,
            config.egress_regions.clone(),
            config.db_path.with_file_name("egress-allowlist.version"),
        )?)),
        _ => Ok(None),
    }
}

/// Checks the license, loads the policies and starts what runs beside the requests: the
/// license checker, the cluster's follower and shipper, the watchers, the refusal flusher,
/// the sidecar's heartbeats, the witness push and the SIEM forwarder.
async fn start(
    state: &AppState,
    sources: policy_files::Sources,
    siem: Option<siem::SharedStatus>,
) -> anyhow::Result<()> {
    {
        let s = state.clone();
        tokio::task::spawn_blocking(move || s.license.refresh(&s.alerts)).await?;
    }
    license::spawn_checker(state.clone());
    state
        .policies
        .reload()
        .await
        .map_err(|e| anyhow::anyhow!("cannot load policies: {e:?}"))?;
    state
        .control_plane
        .start(&state.db, &state.policies, &state.audit)
        .await?;
    state
        .control_plane
        .follow_license(cluster::LicenseLink {
            licensing: Arc::clone(&state.license),
            alerts: state.alerts.clone(),
            lease_id: format!(
                "{}#{}",
                state.audit.origin(),
                hex::encode(rand::random::<[u8; 8]>())
            ),
        })
        .await?;
    policy_files::spawn_watcher(state.clone(), sources, state.config.policies_reload);
    refusals::spawn_flusher(state.clone());
    if let Some(sc) = &state.sidecar {
        // A sidecar with nothing verified to enforce would refuse everything: say so now.
        let Some(version) = state.policies.bundle_version() else {
            anyhow::bail!(
                "the guardian sidecar has no verified policy bundle (see the error above): check POLICY_BUNDLE {} and POLICY_BUNDLE_PUBKEY",
                state
                    .config
                    .policy_bundle
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display()
            );
        };
        tracing::info!(agent = %sc.config.agent_id, origin = state.audit.origin(), bundle = version, "guardian sidecar for one agent");
        sidecar::spawn_heartbeats(state.clone());
    }
    if state.egress.is_some() {
        egress::spawn_watcher(state.clone(), state.config.policies_reload);
    }
    if !state.config.audit_witness_urls.is_empty() {
        witness_push::spawn(state.clone(), state.config.audit_witness_urls.clone());
    }
    if let (Some(cfg), Some(status)) = (state.config.siem.clone(), siem) {
        tracing::info!(siem = %status.lock().expect("not poisoned").target, "SIEM egress on");
        siem::spawn(state.clone(), cfg, status);
    }
    Ok(())
}

/// Listens on `addr` and serves `state` until `shutdown` resolves (then stops accepting and
/// finishes the requests in flight). Prints `listening on http://…` once bound.
pub async fn serve(
    state: AppState,
    addr: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mode = state.config.mode;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e}; is another process using the port? set PORT")
    })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, mode = mode.as_str(), "meshguard gateway listening");
    // Printed before "listening on", which tells a supervisor the gateway is up.
    if let Some(port) = state.config.egress_proxy_port {
        let at = std::net::SocketAddr::new(addr.ip(), port);
        let egress = tokio::net::TcpListener::bind(at).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {at} for the egress proxy: {e}; set EGRESS_PROXY_PORT to a free port")
        })?;
        println!("egress proxy listening on http://{}", egress.local_addr()?);
        tokio::spawn(egress::serve(
            state.clone(),
            egress,
            listen::Gate::new(state.config.connections),
        ));
    }
    let gate = listen::Gate::new(state.config.connections);
    let acceptor = match state.config.tls.clone() {
        Some((cert, key)) => {
            let certs = tls::Reloading::open(&cert, &key).map_err(|e| anyhow::anyhow!(e))?;
            let acceptor = certs
                .acceptor(state.config.admin_client_ca.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
            tls::spawn_reloader(certs, state.alerts.clone(), state.config.policies_reload);
            println!("listening on https://{local}");
            Some(acceptor)
        }
        None => {
            println!("listening on http://{local}");
            None
        }
    };
    serve_http(listener, acceptor, app(state.clone()), shutdown, gate).await;
    // What the last window of refused calls counted is written before the process ends.
    refusals::flush(&state).await;
    // A sidecar hands its last entries to the control plane before its pod goes.
    if state.sidecar.is_some() {
        sidecar::beat_and_record(&state).await;
    }
    Ok(())
}

/// The HTTP listener, with TLS when `acceptor` is given: each connection admitted by the
/// gate (`listen`), its TLS handshake done (10 s at most), and HTTP/1.1 served by hyper with
/// the header timeout and the peer's address as axum's `ConnectInfo`. On `shutdown` it stops
/// accepting and lets the connections in flight finish their requests (30 s at most).
async fn serve_http(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    gate: std::sync::Arc<listen::Gate>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = gate.limits();
    listen::accept_loop(&listener, &gate, shutdown, |tcp, peer, admitted| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        async move {
            let _admitted = admitted;
            match acceptor {
                None => serve_connection(tcp, peer, None, router, watcher, limits).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    // Only a certificate that chained to ADMIN_CLIENT_CA_FILE gets this far.
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| tls::ClientCert {
                            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(c.as_ref())),
                        });
                    serve_connection(tls, peer, client_cert, router, watcher, limits).await;
                }
            }
        }
    })
    .await;
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown were dropped");
    }
}

/// One HTTP/1.1 connection to the router.
async fn serve_connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    client_cert: Option<tls::ClientCert>,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    limits: listen::Limits,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use tower_service::Service as _;
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            if let Some(c) = &client_cert {
                req.extensions_mut().insert(c.clone());
            }
            let mut router = router.clone();
            router.call(req)
        });
    let conn = listen::http1(limits).serve_connection(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
