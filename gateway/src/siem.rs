//! SIEM egress: every durable audit entry, and the alert it raised if any, as an RFC 5424
//! syslog message with structured data, over TCP or TLS (RFC 6587 octet counting, RFC 5425).
//!
//! A forwarder task follows the audit log from a cursor (the last seq sent), so it never sits on
//! the request path: a SIEM that is down or slow never delays a decision, and once it is back
//! the forwarder sends everything after the cursor. The cursor is a file (`SIEM_CURSOR_FILE`),
//! written atomically, so a restarted gateway resumes where it left off.
//!
//! Plain syslog has no acknowledgement, so delivery is at least once: a batch counts as
//! delivered only once the connection it was written on is still open at the next batch (the
//! SIEM never writes to us, so a readable socket means it closed). When a connection dies, the
//! batch that may have been in flight is sent again on the next one. Every message carries the
//! entry's `seq` and `id` in its structured data, by which a SIEM drops a repeat.
//!
//! Hand-written rather than on a syslog crate: the ones on crates.io write RFC 3164 or
//! RFC 5424 without structured data escaping, to UDP or a local socket, and none keep a cursor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshguard_api::{AuditEntry, AuditExportLine, Severity};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::state::AppState;

/// The structured-data ID of our parameters. 32473 is the enterprise number RFC 5612 reserves
/// for documentation; a site with its own sets `SIEM_SD_ID`.
pub(crate) const DEFAULT_SD_ID: &str = "meshguard@32473";
/// Entries read from the log per batch.
const BATCH: usize = 500;
/// RFC 5424 facilities: security/authorization audit entries are "log audit" (13), alerts are
/// "log alert" (14).
const FACILITY_AUDIT: u8 = 13;
const FACILITY_ALERT: u8 = 14;

/// Where and how to send (`SIEM_*`).
#[derive(Debug, Clone)]
pub(crate) struct SiemConfig {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Some: TLS, trusting these roots (system bundle plus `SIEM_CA_FILE` / `CA_BUNDLE_FILE`).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) cursor_file: PathBuf,
    /// HOSTNAME in every message.
    pub(crate) hostname: String,
    pub(crate) sd_id: String,
    /// How often the log is read when there was nothing new.
    pub(crate) poll: Duration,
}

impl SiemConfig {
    /// Reads `SIEM_SYSLOG_URL` (`tcp://host:port` or `tls://host:port`) and its companions.
    pub(crate) fn parse(
        url: &str,
        ca_files: &[&Path],
        cursor_file: PathBuf,
        hostname: &str,
        sd_id: &str,
    ) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("SIEM_SYSLOG_URL {url:?} has no scheme; use tcp://host:port or tls://host:port")
        })?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                format!(
                    "SIEM_SYSLOG_URL {url:?} needs a host and a port, as in tls://siem.example:6514"
                )
            })?;
        let tls = match scheme {
            "tcp" => None,
            "tls" => Some(Arc::new(client_config(ca_files)?)),
            other => {
                return Err(format!(
                    "SIEM_SYSLOG_URL scheme {other:?} is not supported; use tcp:// (RFC 6587) or tls:// (RFC 5425)"
                ));
            }
        };
        check_sd_name(sd_id).map_err(|e| format!("SIEM_SD_ID {sd_id:?}: {e}"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            cursor_file,
            hostname: header_field(hostname, 255),
            sd_id: sd_id.to_owned(),
            poll: Duration::from_millis(250),
        })
    }

    fn target(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls.is_some() { "tls" } else { "tcp" },
            self.host,
            self.port
        )
    }
}

/// A TLS client trusting the system's CA bundle and the site's.
fn client_config(ca_files: &[&Path]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let mut files: Vec<&Path> = ca_files.to_vec();
    if system.is_file() {
        files.push(system);
    }
    for file in files {
        let pem = std::fs::read(file)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", file.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{} is not a PEM bundle: {e}", file.display()))?;
            // A bundle may hold certificates rustls cannot use as roots; the rest still count.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(
            "SIEM_SYSLOG_URL is tls:// but no CA certificate was found; set SIEM_CA_FILE to the SIEM's CA"
                .to_owned(),
        );
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// What `GET /admin/siem` shows.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    pub(crate) target: String,
    pub(crate) connected: bool,
    /// The last seq counted as delivered (the cursor file's value).
    pub(crate) cursor: u64,
    /// The last seq written to the current connection.
    pub(crate) sent: u64,
    pub(crate) messages: u64,
    pub(crate) reconnects: u64,
    pub(crate) last_error: Option<String>,
}

pub(crate) type SharedStatus = Arc<Mutex<Status>>;

/// The cursor: the last seq delivered, 0 when the file does not exist yet.
fn read_cursor(path: &Path) -> anyhow::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "the SIEM cursor {} does not hold a number ({:?}); fix or delete it (deleting sends the whole log again)",
                path.display(),
                text.trim()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the SIEM cursor {}: {e}",
            path.display()
        )),
    }
}

fn write_cursor(path: &Path, seq: u64) -> std::io::Result<()> {
    meshguard_common::fsx::write_atomic(
        path,
        format!("{seq}\n").as_bytes(),
        meshguard_common::fsx::Mode::Private,
    )
}

/// Checks the cursor can be read before the gateway starts (so a bad one stops the start).
pub(crate) fn open(config: &SiemConfig) -> anyhow::Result<SharedStatus> {
    let cursor = read_cursor(&config.cursor_file)?;
    Ok(Arc::new(Mutex::new(Status {
        target: config.target(),
        cursor,
        sent: cursor,
        ..Status::default()
    })))
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(config: &SiemConfig) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((config.host.as_str(), config.port)),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", config.target()))?
    .map_err(|e| format!("cannot connect to {}: {e}", config.target()))?;
    tcp.set_nodelay(true).ok();
    match &config.tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(config.host.clone())
                .map_err(|e| format!("{} is not a TLS server name: {e}", config.host))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", config.target()))?;
            Ok(Box::new(stream))
        }
    }
}

/// True while the SIEM has not closed the connection: it never sends, so anything readable is
/// its end of the stream (or an error).
async fn still_open(stream: &mut Box<dyn Stream>) -> bool {
    let mut byte = [0u8; 1];
    // A zero timeout polls the read once: pending means nothing arrived.
    match tokio::time::timeout(Duration::ZERO, stream.read(&mut byte)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
    }
}

/// Runs the forwarder until the process ends.
pub(crate) fn spawn(state: AppState, config: SiemConfig, status: SharedStatus) {
    tokio::spawn(async move { forward(state, config, status).await });
}

async fn forward(state: AppState, config: SiemConfig, status: SharedStatus) {
    let reader = state.audit.reader();
    let pid = std::process::id().to_string();
    let mut delivered = status.lock().expect("not poisoned").cursor;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut stream = match connect(&config).await {
            Ok(s) => s,
            Err(e) => {
                note_error(&status, &e, false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        {
            let mut s = status.lock().expect("not poisoned");
            if s.last_error.is_some() {
                tracing::info!(siem = %config.target(), "SIEM connected; sending from seq {}", delivered + 1);
            }
            s.connected = true;
            s.last_error = None;
            s.sent = delivered;
        }
        // The batch written last on this connection, not yet known to have arrived.
        let mut in_flight: Option<u64> = None;
        let failure = loop {
            if !still_open(&mut stream).await {
                break format!("{} closed the connection", config.target());
            }
            if let Some(last) = in_flight.take() {
                delivered = last;
                if let Err(e) = write_cursor(&config.cursor_file, delivered) {
                    tracing::error!(error = %e, file = %config.cursor_file.display(), "cannot save the SIEM cursor");
                }
                status.lock().expect("not poisoned").cursor = delivered;
            }
            let after = status.lock().expect("not poisoned").sent;
            let r = Arc::clone(&reader);
            let lines =
                match tokio::task::spawn_blocking(move || r.export(None, after, BATCH)).await {
                    Ok(Ok(lines)) => lines,
                    Ok(Err(e)) => break format!("cannot read the audit log: {e}"),
                    Err(e) => break format!("cannot read the audit log: {e}"),
                };
            let Some(last) = lines.last().map(|l| l.seq) else {
                tokio::time::sleep(config.poll).await;
                continue;
            };
            let mut frames = Vec::with_capacity(lines.len() * 512);
            let mut count = 0u64;
            for line in &lines {
                for msg in messages(line, &config, &pid) {
                    frames.extend_from_slice(msg.len().to_string().as_bytes());
                    frames.push(b' ');
                    frames.extend_from_slice(msg.as_bytes());
                    count += 1;
                }
            }
            if let Err(e) = async {
                stream.write_all(&frames).await?;
                stream.flush().await
            }
            .await
            {
                break format!("cannot write to {}: {e}", config.target());
            }
            in_flight = Some(last);
            let mut s = status.lock().expect("not poisoned");
            s.sent = last;
            s.messages += count;
        };
        // Whatever was in flight is sent again on the next connection.
        note_error(&status, &failure, true);
        status.lock().expect("not poisoned").sent = delivered;
        tokio::time::sleep(backoff).await;
    }
}

fn note_error(status: &SharedStatus, error: &str, was_connected: bool) {
    let mut s = status.lock().expect("not poisoned");
    if s.last_error.as_deref() != Some(error) {
        tracing::warn!(
            error,
            "SIEM egress interrupted; decisions go on and are sent once it is back"
        );
    }
    if was_connected {
        s.reconnects += 1;
    }
    s.connected = false;
    s.last_error = Some(error.to_owned());
}

/// The messages for one log line: the entry, then the alert it raised (if any).
fn messages(line: &AuditExportLine, config: &SiemConfig, pid: &str) -> Vec<String> {
    let Ok(entry) = serde_json::from_value::<AuditEntry>(line.entry.clone()) else {
        // An ingested line this gateway cannot read as an entry still goes out, as it is.
        return vec![format_message(
            FACILITY_AUDIT * 8 + 5,
            "-",
            config,
            pid,
            "audit",
            &sd(
                &config.sd_id,
                &[
                    ("seq", line.seq.to_string()),
                    ("source", line.source.clone()),
                    ("hash", line.hash.clone()),
                ],
            ),
            &line.entry.to_string(),
        )];
    };
    let mut out = vec![entry_message(line, &entry, config, pid)];
    out.extend(alert_message(line, &entry, config, pid));
    out
}

/// The entry's message: its fields as structured data, its canonical body as the text.
fn entry_message(
    line: &AuditExportLine,
    entry: &AuditEntry,
    config: &SiemConfig,
    pid: &str,
) -> String {
    let body = crate::audit::canonical(&line.entry);
    let severity = if entry.decision == "deny" { 4 } else { 6 };
    let mut params = vec![
        ("seq", line.seq.to_string()),
        ("id", entry.id.clone()),
        ("source", line.source.clone()),
        ("event", entry.event.clone()),
        ("decision", entry.decision.clone()),
        ("action", entry.action.clone()),
    ];
    let optional = [
        ("agentId", &entry.agent_id),
        ("agentName", &entry.agent_name),
        ("resource", &entry.resource),
        ("policy", &entry.policy_name),
        ("rule", &entry.rule),
    ];
    params.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
    );
    params.push(("traceId", entry.trace_id.clone()));
    params.push(("mode", entry.mode.clone()));
    params.push(("hash", line.hash.clone()));
    format_message(
        FACILITY_AUDIT * 8 + severity,
        &entry.timestamp,
        config,
        pid,
        "audit",
        &sd(&config.sd_id, &params),
        &body,
    )
}

/// The alert the entry stands for or raised, if any: a gateway-level alert (license,
/// certificate, allowlist) is recorded as a `system_alert` entry; a denial raises one.
fn alert_message(
    line: &AuditExportLine,
    entry: &AuditEntry,
    config: &SiemConfig,
    pid: &str,
) -> Option<String> {
    // The severity, as the alert names it, the title and the text.
    let (severity, named, title, text) = if entry.event == "system_alert" {
        let text = |k: &str| {
            entry
                .meta
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let severity = match text("severity").as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            _ => Severity::Info,
        };
        (
            severity,
            text("severity"),
            text("title"),
            entry.reason.clone().unwrap_or_default(),
        )
    } else {
        let alert = crate::alerts::Alerts::for_entry(entry)?;
        let named = format!("{:?}", alert.severity).to_ascii_lowercase();
        (alert.severity, named, alert.title, alert.message)
    };
    let params = [
        ("seq", line.seq.to_string()),
        ("id", entry.id.clone()),
        ("severity", named),
        ("title", title),
        ("event", entry.event.clone()),
        ("traceId", entry.trace_id.clone()),
    ];
    let pri = match severity {
        Severity::Critical => 2,
        Severity::Warning => 4,
        Severity::Info => 6,
    };
    Some(format_message(
        FACILITY_ALERT * 8 + pri,
        &entry.timestamp,
        config,
        pid,
        "alert",
        &sd(&config.sd_id, &params),
        &text,
    ))
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD BOM MSG` (RFC 5424 §6).
fn format_message(
    pri: u8,
    timestamp: &str,
    config: &SiemConfig,
    pid: &str,
    msgid: &str,
    sd: &str,
    msg: &str,
) -> String {
    format!(
        "<{pri}>1 {} {} meshguard {pid} {msgid} {sd} \u{feff}{msg}",
        timestamp_field(timestamp),
        config.hostname,
    )
}

/// RFC 5424 TIMESTAMP: RFC 3339 with at most 6 fractional digits, or `-`.
fn timestamp_field(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "-".to_owned();
    };
    t.to_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(value: &str, max: usize) -> String {
    let s: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() { "-".to_owned() } else { s }
}

/// An SD-NAME (RFC 5424 §6.3.2): 1 to 32 printable US-ASCII, no `=`, space, `]` or `"`.
fn check_sd_name(id: &str) -> Result<(), String> {
    let bad = |c: char| !c.is_ascii_graphic() || matches!(c, '=' | ']' | '"');
    if id.is_empty() || id.len() > 32 || id.chars().any(bad) {
        return Err("an SD-ID is 1 to 32 printable ASCII characters without '=', ']', '\"' or spaces (e.g. meshguard@<your enterprise number>)".to_owned());
    }
    Ok(())
}

/// One SD-ELEMENT, values escaped (`"`, `\` and `]` get a backslash, §6.3.3).
fn sd(id: &str, params: &[(&str, String)]) -> String {
    let mut out = format!("[{id}");
    for (name, value) in params {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | ']') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SiemConfig {
        SiemConfig::parse(
            "tcp://127.0.0.1:514",
            &[],
            PathBuf::from("/nonexistent"),
            "gw 1",
            DEFAULT_SD_ID,
        )
        .unwrap()
    }

    #[test]
    fn structured_data_values_are_escaped() {
        let s = sd("x@1", &[("a", r#"say "hi" [ok] \ bye"#.to_owned())]);
        assert_eq!(s, r#"[x@1 a="say \"hi\" [ok\] \\ bye"]"#);
    }

    #[test]
    fn a_denial_is_a_warning_in_log_audit_and_raises_an_alert_message() {
        let entry = serde_json::json!({
            "id": "e1", "timestamp": "2026-12-02T10:00:00.123456789Z", "event": "proxy",
            "agentId": "a1", "agentName": "bot", "action": "write:x", "decision": "deny",
            "outcome": "denied", "reason": "no", "traceId": "t1", "mode": "enforce",
            "snapshot": 1, "meta": {}
        });
        let line = AuditExportLine {
            seq: 7,
            source: "gw".into(),
            prev_hash: String::new(),
            hash: "ab".into(),
            entry,
        };
        let msgs = messages(&line, &config(), "42");
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].starts_with("<108>1 2026-12-02T10:00:00.123456Z gw1 meshguard 42 audit [meshguard@32473 seq=\"7\" id=\"e1\""),
            "{}",
            msgs[0]
        );
        assert!(msgs[0].contains("\u{feff}{"), "the entry follows the BOM");
        assert!(msgs[1].starts_with("<116>1 "), "{}", msgs[1]);
        assert!(msgs[1].contains(" alert [meshguard@32473 seq=\"7\""));
    }

    #[test]
    fn a_system_alert_entry_is_an_audit_message_and_an_alert_at_its_severity() {
        let entry = serde_json::json!({
            "id": "aud_9", "timestamp": "2026-12-02T10:00:00Z", "event": "system_alert",
            "action": "system:alert", "decision": "", "outcome": "",
            "reason": "the allowlist is not signed", "traceId": "t9", "mode": "", "snapshot": 0,
            "meta": {"title": "Egress Allowlist Refused", "severity": "critical", "trigger": "error"}
        });
        let line = AuditExportLine {
            seq: 12,
            source: "gw".into(),
            prev_hash: String::new(),
            hash: "cd".into(),
            entry,
        };
        let msgs = messages(&line, &config(), "42");
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs[0].starts_with("<110>1 "),
            "log audit, informational: {}",
            msgs[0]
        );
        assert!(
            msgs[1].starts_with("<114>1 2026-12-02T10:00:00.000000Z gw1 meshguard 42 alert [meshguard@32473 seq=\"12\" id=\"aud_9\" severity=\"critical\" title=\"Egress Allowlist Refused\""),
            "{}",
            msgs[1]
        );
        assert!(msgs[1].ends_with("\u{feff}the allowlist is not signed"));
    }

    #[test]
    fn bad_urls_and_sd_ids_are_refused_with_the_fix() {
        let p = || PathBuf::from("/x");
        let e = SiemConfig::parse("udp://h:514", &[], p(), "h", DEFAULT_SD_ID).unwrap_err();
        assert!(e.contains("tcp://"), "{e}");
        let e = SiemConfig::parse("tcp://h", &[], p(), "h", DEFAULT_SD_ID).unwrap_err();
        assert!(e.contains("host and a port"), "{e}");
        let e = SiemConfig::parse("tcp://h:1", &[], p(), "h", "a b").unwrap_err();
        assert!(e.contains("SIEM_SD_ID"), "{e}");
    }
}
