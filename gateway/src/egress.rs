//! The egress proxy: an HTTP forward proxy (CONNECT tunnels, and plain HTTP in absolute form)
//! through which a site's agents reach the outside, and only the destinations a signed
//! allowlist names. The allowlist arrives on media, signed with the publisher's minisign key;
//! an unsigned, wrongly signed or older list is refused and the current one kept (and said so,
//! with an alert). Region pinning: a destination tagged with a region outside the site's
//! pinned regions (`EGRESS_REGIONS`) is refused even if listed. Every connection is an audit
//! row (`egress`, or `egress_denied` with an alert, like a policy deny).
//!
//! Hand-written rather than on hyper: a CONNECT tunnel is a request head and two copied
//! streams, and the head is read with a hard size limit before anything is decided.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use meshguard_api::AuditEntry;
use serde::Deserialize;
use serde_json::Map;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    destinations: Vec<Destination>,
    /// When the file last loaded was modified, to notice a new one.
    modified: Option<SystemTime>,
}

/// The allowlist in force and where updates come from.
#[derive(Debug)]
pub(crate) struct Egress {
    path: PathBuf,
    pubkey: PathBuf,
    regions: Vec<String>,
    current: RwLock<Allowlist>,
}

/// Verifies `path` (with `path.minisig`) against the minisign public key `pubkey` and parses it.
fn load(path: &Path, pubkey: &Path) -> Result<(Doc, Option<SystemTime>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_text = std::fs::read_to_string(&sig_path).map_err(|_| {
        format!(
            "{} has no signature ({} is missing); an unsigned allowlist is refused",
            path.display(),
            Path::new(&sig_path).display()
        )
    })?;
    let pk_text = std::fs::read_to_string(pubkey)
        .map_err(|e| format!("cannot read the allowlist key {}: {e}", pubkey.display()))?;
    let pk = minisign_verify::PublicKey::decode(pk_text.trim())
        .or_else(|_| minisign_verify::PublicKey::from_base64(pk_text.trim()))
        .map_err(|_| format!("{} is not a minisign public key", pubkey.display()))?;
    let sig = minisign_verify::Signature::decode(&sig_text)
        .map_err(|e| format!("the allowlist signature is malformed: {e}"))?;
    pk.verify(&bytes, &sig, false).map_err(|_| {
        format!(
            "{} is not signed by the key in {}; refused",
            path.display(),
            pubkey.display()
        )
    })?;
    let doc: Doc = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not an egress allowlist: {e}", path.display()))?;
    if doc.format != FORMAT {
        return Err(format!(
            "{}: format {:?} is not {FORMAT:?}",
            path.display(),
            doc.format
        ));
    }
    Ok((doc, modified))
}

impl Egress {
    /// Loads the first allowlist; a site cannot start its egress proxy on a bad one.
    pub(crate) fn open(path: &Path, pubkey: &Path, regions: Vec<String>) -> anyhow::Result<Self> {
        let (doc, modified) =
            load(path, pubkey).map_err(|e| anyhow::anyhow!("EGRESS_ALLOWLIST: {e}"))?;
        tracing::info!(version = doc.version, created = ?doc.created_at, destinations = doc.destinations.len(), "egress allowlist loaded");
        Ok(Self {
            path: path.to_owned(),
            pubkey: pubkey.to_owned(),
            regions,
            current: RwLock::new(Allowlist {
                version: doc.version,
                destinations: doc.destinations,
                modified,
            }),
        })
    }

    pub(crate) fn version(&self) -> u64 {
        self.current.read().expect("allowlist").version
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
        let (doc, modified) = match load(&self.path, &self.pubkey) {
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
        cur.modified = modified;
        if doc.version <= cur.version {
            return Err(format!(
                "the egress allowlist version {} is not newer than the one in force ({}); refused, the current one is kept",
                doc.version, cur.version
            ));
        }
        tracing::info!(
            from = cur.version,
            to = doc.version,
            "egress allowlist updated"
        );
        cur.version = doc.version;
        cur.destinations = doc.destinations;
        Ok(true)
    }

    /// Whether `host:port` may be reached; the reason when not.
    pub(crate) fn judge(&self, host: &str, port: u16) -> Result<(), String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let cur = self.current.read().expect("allowlist");
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
        Ok(())
    }
}

/// Watches the allowlist file for updates.
pub(crate) fn spawn_watcher(state: AppState, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(egress) = state.inner.egress.as_ref() else {
                return;
            };
            if let Err(e) = egress.reload() {
                tracing::error!(error = %e, "egress allowlist update refused");
                state
                    .inner
                    .alerts
                    .raise(crate::alerts::Alert::system("Egress Allowlist Refused", &e));
            }
        }
    });
}

/// Serves the egress proxy on `listener` for as long as the process runs.
pub(crate) async fn serve(state: AppState, listener: TcpListener) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&state, client, peer).await {
                tracing::debug!(error = %e, "egress connection ended");
            }
        });
    }
}

async fn handle(
    state: &AppState,
    mut client: TcpStream,
    peer: std::net::SocketAddr,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("the request head did not arrive in time"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return reply(
                &mut client,
                "431 Request Header Fields Too Large",
                "the request head is too large",
            )
            .await;
        }
    };
    let line = String::from_utf8_lossy(&head[..head.iter().position(|b| *b == b'\r').unwrap_or(0)])
        .into_owned();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let destination = if method == "CONNECT" {
        split_host_port(target, None)
    } else {
        target
            .strip_prefix("http://")
            .map(|rest| rest.split('/').next().unwrap_or(""))
            .and_then(|authority| split_host_port(authority, Some(80)))
    };
    let Some((host, port)) = destination else {
        return reply(
            &mut client,
            "400 Bad Request",
            "send CONNECT host:port, or a request in absolute form (http://host/path)",
        )
        .await;
    };
    let egress = state
        .inner
        .egress
        .as_ref()
        .expect("the proxy runs only with an allowlist");
    let verdict = egress.judge(&host, port);
    record(state, method, &host, port, peer, verdict.as_ref().err()).await;
    if let Err(why) = verdict {
        return reply(&mut client, "403 Forbidden", &why).await;
    }
    let upstream = match tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            return reply(
                &mut client,
                "502 Bad Gateway",
                &format!("{host}:{port} could not be reached"),
            )
            .await;
        }
    };
    let mut upstream = upstream;
    let _ = upstream.set_nodelay(true);
    if method == "CONNECT" {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        // Bytes the client sent after the head belong to the tunnel.
        upstream.write_all(&head[end..]).await?;
    } else {
        upstream.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
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

async fn reply(client: &mut TcpStream, status: &str, why: &str) -> std::io::Result<()> {
    let body = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

/// One audit row per connection: `egress` or `egress_denied` (with its alert).
async fn record(
    state: &AppState,
    method: &str,
    host: &str,
    port: u16,
    peer: std::net::SocketAddr,
    denied: Option<&String>,
) {
    let allowed = denied.is_none();
    let mut meta = Map::new();
    meta.insert("client".into(), serde_json::json!(peer.ip().to_string()));
    meta.insert(
        "allowlistVersion".into(),
        serde_json::json!(state.inner.egress.as_ref().map(Egress::version)),
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
        state.inner.alerts.raise(alert);
    }
    if let Err(e) = state.inner.audit.append(entry).await {
        tracing::error!(error = %e, "cannot record an egress connection");
    }
}
