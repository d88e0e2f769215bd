//! The egress proxy: an HTTP forward proxy (CONNECT tunnels, and plain HTTP in absolute form)
//! through which a site's agents reach the outside, and only the destinations a signed
//! allowlist names. The allowlist arrives on media, signed with the publisher's minisign key;
//! an unsigned, wrongly signed or older list is refused and the current one kept (and said so,
//! with an alert). Region pinning: a destination tagged with a region outside the site's
//! pinned regions (`EGRESS_REGIONS`) is refused even if listed. Every connection is an audit
//! row (`egress`, or `egress_denied` with an alert, like a policy deny).
//!
//! Served by hyper, so every request on a connection is parsed, judged and audited on its own
//! (a hand-written first version judged only a connection's first request and piped the rest).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use meshguard_api::AuditEntry;
use serde::Deserialize;
use serde_json::Map;
use tokio::net::{TcpListener, TcpStream};

use crate::state::AppState;

const FORMAT: &str = "meshguard-egress-allowlist/v1";
/// The largest request head read before a decision.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc {
    format: String,
    version: u64,
    #[serde(default)]
    created_at: Option<String>,
    /// After this time (RFC 3339) the list allows nothing: a site must take a newer one.
    #[serde(default)]
    expires_at: Option<String>,
    destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Destination {
    /// A host name, `*.suffix`, or an IP literal.
    host: String,
    /// Allowed ports; empty: any.
    #[serde(default)]
    ports: Vec<u16>,
    /// The region the destination is in, for region pinning.
    #[serde(default)]
    region: Option<String>,
}

#[derive(Debug)]
struct Allowlist {
    version: u64,
    expires: Option<chrono::DateTime<chrono::Utc>>,
    destinations: Vec<Destination>,
    /// When the file last loaded was modified, to notice a new one.
    modified: Option<SystemTime>,
    /// The SHA-256 of the signed file in force (hex), for the configuration entries.
    sha256: String,
}

/// The allowlist in force and where updates come from.
#[derive(Debug)]
pub(crate) struct Egress {
    path: PathBuf,
    pubkey: PathBuf,
    /// The highest version this gateway has enforced, kept across restarts: an older list is
    /// refused even after a restart (a rolled-back list would open destinations again).
    seen: PathBuf,
    regions: Vec<String>,
    current: RwLock<Allowlist>,
}

/// Verifies `path` (with `path.minisig`) against the minisign public key `pubkey` and parses it.
fn load(path: &Path, pubkey: &Path) -> Result<(Doc, crate::signed_file::Verified), String> {
    let file = crate::signed_file::read(path, pubkey, "an egress allowlist")?;
    let bytes = &file.bytes;
    let doc: Doc = serde_json::from_slice(bytes)
        .map_err(|e| format!("{} is not an egress allowlist: {e}", path.display()))?;
    if doc.format != FORMAT {
        return Err(format!(
            "{}: format {:?} is not {FORMAT:?}",
            path.display(),
            doc.format
        ));
    }
    if let Some(at) = expiry(&doc)?
        && at <= chrono::Utc::now()
    {
        return Err(format!(
            "{}: version {} expired at {}; publish a newer signed list",
            path.display(),
            doc.version,
            at.to_rfc3339()
        ));
    }
    Ok((doc, file))
}

fn expiry(doc: &Doc) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    doc.expires_at
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| format!("expiresAt {t:?} is not an RFC 3339 time: {e}"))
        })
        .transpose()
}

/// The highest allowlist version recorded in `seen` (0 when none).
fn highest_seen(seen: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(seen) {
        Ok(text) => text.trim().parse().map_err(|_| {
            format!(
                "{} does not hold a version number; restore it or remove it knowingly",
                seen.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", seen.display())),
    }
}

fn record_seen(seen: &Path, version: u64) -> Result<(), String> {
    meshguard_common::fsx::write_atomic(
        seen,
        format!("{version}\n").as_bytes(),
        meshguard_common::fsx::Mode::Public,
    )
    .map_err(|e| {
        format!(
            "cannot record the allowlist version in {}: {e}",
            seen.display()
        )
    })
}

impl Egress {
    /// Loads the first allowlist; a site cannot start its egress proxy on a bad one.
    pub(crate) fn open(
        path: &Path,
        pubkey: &Path,
        regions: Vec<String>,
        seen: PathBuf,
    ) -> anyhow::Result<Self> {
        let (doc, file) =
            load(path, pubkey).map_err(|e| anyhow::anyhow!("EGRESS_ALLOWLIST: {e}"))?;
        let highest = highest_seen(&seen).map_err(|e| anyhow::anyhow!("EGRESS_ALLOWLIST: {e}"))?;
        if doc.version < highest {
            anyhow::bail!(
                "EGRESS_ALLOWLIST: {} is version {}, older than version {highest} this gateway has already enforced; refused (put the newest signed list in its place)",
                path.display(),
                doc.version
            );
        }
        record_seen(&seen, doc.version).map_err(|e| anyhow::anyhow!("EGRESS_ALLOWLIST: {e}"))?;
        let expires = expiry(&doc).map_err(|e| anyhow::anyhow!("EGRESS_ALLOWLIST: {e}"))?;
        tracing::info!(version = doc.version, created = ?doc.created_at, destinations = doc.destinations.len(), "egress allowlist loaded");
        Ok(Self {
            path: path.to_owned(),
            pubkey: pubkey.to_owned(),
            seen,
            regions,
            current: RwLock::new(Allowlist {
                version: doc.version,
                expires,
                destinations: doc.destinations,
                modified: file.modified,
                sha256: file.sha256,
            }),
        })
    }

    pub(crate) fn version(&self) -> u64 {
        self.current.read().expect("allowlist").version
    }

    /// What the configuration entries say of the allowlist in force.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let cur = self.current.read().expect("allowlist");
        let mut d = serde_json::json!({
            "version": cur.version,
            "sha256": cur.sha256,
            "destinations": cur.destinations.len(),
            "signed": true,
        });
        if let Some(at) = cur.expires {
            d["expiresAt"] = serde_json::json!(at.to_rfc3339());
        }
        d
    }

    /// Takes a changed allowlist file if it verifies and is newer; otherwise keeps the current
    /// one and says why (the error is for an alert).
    pub(crate) fn reload(&self) -> Result<bool, String> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified == self.current.read().expect("allowlist").modified {
            return Ok(false);
        }
        let (doc, file) = match load(&self.path, &self.pubkey) {
            Ok(x) => x,
            Err(e) => {
                // Remember the file so one bad update is reported once.
                self.current.write().expect("allowlist").modified = modified;
                return Err(format!(
                    "{e}; the allowlist in force (version {}) is kept",
                    self.version()
                ));
            }
        };
        let mut cur = self.current.write().expect("allowlist");
        cur.modified = file.modified;
        if doc.version <= cur.version {
            return Err(format!(
                "the egress allowlist version {} is not newer than the one in force ({}); refused, the current one is kept",
                doc.version, cur.version
            ));
        }
        let expires = expiry(&doc)?;
        record_seen(&self.seen, doc.version).map_err(|e| {
            format!(
                "{e}; the allowlist in force (version {}) is kept",
                cur.version
            )
        })?;
        tracing::info!(
            from = cur.version,
            to = doc.version,
            "egress allowlist updated"
        );
        cur.version = doc.version;
        cur.sha256 = file.sha256;
        cur.expires = expires;
        cur.destinations = doc.destinations;
        Ok(true)
    }

    /// Whether `host:port` may be reached, with the region the allowlist gives it; the reason
    /// when not.
    pub(crate) fn judge(&self, host: &str, port: u16) -> Result<Option<String>, String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let cur = self.current.read().expect("allowlist");
        if let Some(at) = cur.expires
            && at <= chrono::Utc::now()
        {
            return Err(format!(
                "the egress allowlist (version {}) expired at {}; nothing is allowed until a newer signed list is in place",
                cur.version,
                at.to_rfc3339()
            ));
        }
        let matches = |d: &Destination| {
            let h = d.host.to_ascii_lowercase();
            let host_ok = match h.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => host == h,
            };
            host_ok && (d.ports.is_empty() || d.ports.contains(&port))
        };
        let Some(d) = cur.destinations.iter().find(|d| matches(d)) else {
            return Err(format!(
                "{host}:{port} is not on the egress allowlist (version {})",
                cur.version
            ));
        };
        if !self.regions.is_empty() {
            match &d.region {
                Some(r) if self.regions.contains(r) => {}
                Some(r) => {
                    return Err(format!(
                        "{host}:{port} is in region {r}, outside this site's pinned regions ({})",
                        self.regions.join(", ")
                    ));
                }
                None => {
                    return Err(format!(
                        "{host}:{port} names no region and this site is pinned to {}",
                        self.regions.join(", ")
                    ));
                }
            }
        }
        Ok(d.region.clone())
    }
}

/// Watches the allowlist file for updates.
pub(crate) fn spawn_watcher(state: AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(egress) = state.egress.as_ref() else {
                return;
            };
            let reloaded = egress.reload();
            if reloaded == Ok(true)
                && let Err(e) =
                    crate::settings_entry::record(&state, "egress allowlist updated").await
            {
                tracing::error!(error = %e, "the egress allowlist update is not in the audit log");
                state.alerts.raise(crate::alerts::Alert::system(
                    "Configuration Not Recorded",
                    &e.to_string(),
                ));
            }
            if let Err(e) = reloaded {
                tracing::error!(error = %e, "egress allowlist update refused");
                state
                    .alerts
                    .raise(crate::alerts::Alert::system("Egress Allowlist Refused", &e));
            }
        }
    });
}

/// Serves the egress proxy on `listener` for as long as the process runs: each connection
/// admitted by the gate (`listen`), and every request on it parsed by hyper (head within the
/// header timeout, at most 16 KiB), judged and audited on its own; a pipelined second request
/// is judged like the first.
pub(crate) async fn serve(state: AppState, listener: TcpListener, gate: Arc<crate::listen::Gate>) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds");
    let limits = gate.limits();
    crate::listen::accept_loop(
        &listener,
        &gate,
        std::future::pending(),
        |tcp, peer, admitted| {
            let state = state.clone();
            let client = client.clone();
            async move {
                let _admitted = admitted;
                let service = hyper::service::service_fn(move |req| {
                    let (state, client) = (state.clone(), client.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            one_request(&state, &client, peer, req).await,
                        )
                    }
                });
                let mut http = crate::listen::http1(limits);
                http.max_buf_size(MAX_HEAD.max(8192));
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "egress connection ended");
                }
            }
        },
    )
    .await;
}

type ProxyBody = axum::body::Body;

/// One request through the proxy: a CONNECT tunnel, or a plain HTTP request in absolute form.
async fn one_request(
    state: &AppState,
    client: &reqwest::Client,
    peer: std::net::SocketAddr,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<ProxyBody> {
    let method = req.method().as_str().to_owned();
    let connect = req.method() == hyper::Method::CONNECT;
    let destination = if connect {
        req.uri()
            .authority()
            .and_then(|a| split_host_port(a.as_str(), None))
    } else if req.uri().scheme_str() == Some("http") {
        req.uri()
            .authority()
            .and_then(|a| split_host_port(a.as_str(), Some(80)))
    } else {
        None
    };
    let Some((host, port)) = destination else {
        return refusal(
            hyper::StatusCode::BAD_REQUEST,
            "send CONNECT host:port, or a request in absolute form (http://host/path)",
        );
    };
    let egress = state
        .egress
        .as_ref()
        .expect("the proxy runs only with an allowlist");
    let verdict = egress.judge(&host, port);
    if let Err(e) = record(state, &method, (&host, port), peer, &verdict).await {
        return refusal(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            &format!("the audit log could not record this request ({e}); nothing was forwarded"),
        );
    }
    if let Err(why) = verdict {
        return refusal(hyper::StatusCode::FORBIDDEN, &why);
    }
    if connect {
        tunnel(req, host, port).await
    } else {
        forward(client, req, &host, port).await
    }
}

/// A refusal, closing the connection.
fn refusal(status: hyper::StatusCode, why: &str) -> hyper::Response<ProxyBody> {
    let mut r = hyper::Response::new(ProxyBody::from(format!("{why}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// Connects to `host:port` and, once the client has the 200, copies both ways.
async fn tunnel(
    req: hyper::Request<hyper::body::Incoming>,
    host: String,
    port: u16,
) -> hyper::Response<ProxyBody> {
    let upstream = match tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            return refusal(
                hyper::StatusCode::BAD_GATEWAY,
                &format!("{host}:{port} could not be reached"),
            );
        }
    };
    let _ = upstream.set_nodelay(true);
    tokio::spawn(async move {
        let mut upstream = upstream;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = hyper_util::rt::TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "egress tunnel ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "egress tunnel not upgraded"),
        }
    });
    hyper::Response::new(ProxyBody::empty())
}

/// What goes on through the proxy: end to end, without the proxy's own credentials.
fn end_to_end(headers: &hyper::HeaderMap) -> hyper::HeaderMap {
    crate::routes::end_to_end(headers, |_| false)
}

/// Sends one absolute-form request on and streams the answer back.
async fn forward(
    client: &reqwest::Client,
    req: hyper::Request<hyper::body::Incoming>,
    host: &str,
    port: u16,
) -> hyper::Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let has_body = parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
        || parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    let mut request = client
        .request(parts.method.clone(), parts.uri.to_string())
        .headers(end_to_end(&parts.headers));
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(
            axum::body::Body::new(body).into_data_stream(),
        ));
    }
    match request.send().await {
        Ok(up) => {
            let (status, headers) = (up.status(), end_to_end(up.headers()));
            let mut r = hyper::Response::new(ProxyBody::from_stream(up.bytes_stream()));
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        }
        Err(e) => {
            tracing::debug!(error = %e, "egress forward failed");
            refusal(
                hyper::StatusCode::BAD_GATEWAY,
                &format!("{host}:{port} could not be reached"),
            )
        }
    }
}

fn split_host_port(s: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
            None => (s.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default?,
    };
    (!host.is_empty() && port != 0).then_some((host, port))
}

/// One audit row per request: `egress` or `egress_denied` (with its alert). Nothing goes
/// through that the log does not hold.
async fn record(
    state: &AppState,
    method: &str,
    (host, port): (&str, u16),
    peer: std::net::SocketAddr,
    verdict: &Result<Option<String>, String>,
) -> Result<u64, crate::audit::AuditError> {
    let denied = verdict.as_ref().err();
    let allowed = denied.is_none();
    let mut meta = Map::new();
    meta.insert("client".into(), serde_json::json!(peer.ip().to_string()));
    if let Ok(Some(region)) = verdict {
        // Where the data went, for evidence of region pinning.
        meta.insert("region".into(), serde_json::json!(region));
    }
    meta.insert(
        "allowlistVersion".into(),
        serde_json::json!(state.egress.as_ref().map(Egress::version)),
    );
    let entry = AuditEntry {
        id: crate::ids::new_time_ordered_id("aud"),
        timestamp: crate::clock::now_rfc3339(),
        event: if allowed { "egress" } else { "egress_denied" }.into(),
        agent_id: None,
        agent_name: None,
        trust_tier: None,
        action: format!("egress:{}", method.to_ascii_lowercase()),
        resource: Some(format!("{host}:{port}")),
        method: Some(method.to_owned()),
        path: None,
        decision: if allowed { "allow" } else { "deny" }.into(),
        outcome: if allowed { "allow" } else { "deny" }.into(),
        policy: None,
        policy_name: None,
        rule: None,
        reason: denied.cloned(),
        trace_id: crate::ids::new_id("trace"),
        mode: "enforce".into(),
        snapshot: 0,
        meta,
        would_deny: false,
        truncated: Default::default(),
    };
    if let Some(alert) = crate::alerts::Alerts::for_entry(&entry) {
        state.alerts.raise(alert);
    }
    state.audit.append(entry).await.inspect_err(|e| {
        tracing::error!(error = %e, "cannot record an egress request; refused");
    })
}
