//! Configuration: the documented environment variables, each also a command-line flag.
//!
//! [`Args`] is what clap reads; [`Config`] is the checked result the rest of the gateway trusts.
//! The gateway refuses to start with a missing or weak admin token or JWT secret unless `--dev`
//! asks it to generate them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// MeshGuard-compatible governance gateway.
///
/// Every flag can also be set by the environment variable named after it.
#[derive(Clone, Parser)]
#[command(name = "meshguard-gateway", version, about)]
pub struct Args {
    /// Port to listen on [default: 3100; 4000 for a guardian sidecar].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// Address to listen on [default: 0.0.0.0; 127.0.0.1 for a guardian sidecar, which only
    /// its pod may reach].
    #[arg(long, env = "HOST")]
    pub host: Option<IpAddr>,

    /// The 32-byte key that seals alert-channel secrets in the database (created, mode 0600, on
    /// first start; keep it apart from database backups). Default: secrets.key beside the
    /// database.
    #[arg(long, env = "SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// The same key given in base64 instead of a file (`head -c 32 /dev/urandom | base64`), from
    /// an orchestrator's secret: every gateway sharing a DATABASE_URL needs the same key.
    #[arg(long, env = "SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<String>,

    /// Serve HTTPS with this PEM certificate chain (with TLS_KEY_FILE); both files are reloaded
    /// when they change, with no restart.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// The PEM private key of TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Require, for the admin API, a client certificate issued by a CA in this PEM bundle
    /// (mutual TLS) besides the admin token. Needs TLS_CERT_FILE. Agents connect without one.
    #[arg(long, env = "ADMIN_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub admin_client_ca_file: Option<PathBuf>,

    /// A PEM bundle of the site's CAs, trusted (besides the built-in roots) by every outbound
    /// call: PROXY_TARGET, alert webhooks, a sidecar's GATEWAY_URL.
    #[arg(long, env = "CA_BUNDLE_FILE")]
    pub ca_bundle_file: Option<PathBuf>,

    /// Run as the guardian sidecar of this one agent: enforce the signed policy bundle
    /// (POLICY_BUNDLE) next to the agent, answer `/enforce`, `/proxy/*` and the batch endpoint
    /// for it alone, keep a local audit log, and send heartbeats with that log to GATEWAY_URL.
    #[arg(long, env = "SIDECAR_AGENT_ID")]
    pub sidecar_agent_id: Option<String>,

    /// Sidecar: the control-plane gateway heartbeats go to (omit for a disconnected sidecar).
    #[arg(long, env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,

    /// Sidecar: file holding the agent's token, which authenticates heartbeats (re-read each
    /// time, so a re-issued token is picked up).
    #[arg(long, env = "SIDECAR_AGENT_TOKEN_FILE")]
    pub sidecar_agent_token_file: Option<PathBuf>,

    /// Sidecar: the agent's token itself, for platforms that pass secrets as environment
    /// variables (a Kubernetes secretKeyRef); SIDECAR_AGENT_TOKEN_FILE is preferred.
    #[arg(long, env = "SIDECAR_AGENT_TOKEN", hide_env_values = true)]
    pub sidecar_agent_token: Option<String>,

    /// Sidecar: seconds between heartbeats.
    #[arg(long, env = "BUNDLE_SYNC_INTERVAL", default_value_t = 60)]
    pub bundle_sync_interval: u64,

    /// Sidecar: directory for its database, audit key and the agent record last received.
    #[arg(long, env = "CACHE_DIR", default_value = "/cache")]
    pub cache_dir: PathBuf,

    /// Sidecar: the agent's trust tier until a heartbeat brings the registered one.
    #[arg(long, env = "SIDECAR_AGENT_TRUST_TIER", default_value = "verified")]
    pub sidecar_agent_trust_tier: String,

    /// Sidecar: the agent's tags until a heartbeat brings the registered ones (comma list).
    #[arg(long, env = "SIDECAR_AGENT_TAGS", value_delimiter = ',')]
    pub sidecar_agent_tags: Vec<String>,

    /// Verify POLICY_BUNDLE with POLICY_BUNDLE_PUBKEY, print what it holds and exit (what the
    /// sidecar's init container runs): exit status 0 only for a bundle that verifies.
    #[arg(long)]
    pub check_policy_bundle: bool,

    /// Ask URL (the sidecar's `/ready` or `/health` on the pod's loopback) and exit 0 only if it
    /// answers 200 within 3 s: the exec probe of a sidecar that listens on loopback only, which
    /// the kubelet's HTTP probes (sent to the pod's address) cannot reach.
    #[arg(long, value_name = "URL")]
    pub probe: Option<String>,

    /// Admin credential for the admin API (at least 24 characters). Prefer the environment
    /// variable: command-line arguments are visible to other users of the machine.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// HMAC key for agent tokens (HS256, at least 32 characters).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Default agent token lifetime, e.g. 24h, 7d, 90m.
    #[arg(long, env = "JWT_EXPIRES_IN", default_value = "24h")]
    pub jwt_expires_in: String,

    /// SQLite database file (created with its directory when missing). AUDIT_DB_PATH is read
    /// when DB_PATH is not set, as older MeshGuard releases named it. Default: ./data/meshguard.db.
    #[arg(long, env = "DB_PATH")]
    pub db_path: Option<PathBuf>,

    /// A PostgreSQL control plane shared by several gateways
    /// (`postgresql://USER:PASSWORD@HOST:PORT/DATABASE`), instead of the agents, policies and
    /// alert channels in DB_PATH. DB_PATH still holds this gateway's audit-log index and keys.
    /// Set it in the environment (from a secret): command-line arguments are visible to other
    /// users of the machine.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// With DATABASE_URL: the longest a change made through another gateway (a revoked agent,
    /// a new policy) takes to act here when its notification is lost, in milliseconds; a
    /// notification acts at once.
    #[arg(long, env = "CONTROL_PLANE_POLL_MS", default_value_t = 1000)]
    pub control_plane_poll_ms: u64,

    /// Directory of YAML policy files, read-only through the admin API.
    #[arg(long, env = "POLICIES_DIR", default_value = "./policies")]
    pub policies_dir: PathBuf,

    /// Enforcement mode: enforce, audit or bypass. Checked by the gateway rather than clap, so
    /// a misspelled value names MODE, the variable users set, not only the flag.
    #[arg(long, env = "MODE", default_value = "enforce")]
    pub mode: String,

    /// Upstream that allowed `/proxy/*` calls are forwarded to.
    #[arg(long, env = "PROXY_TARGET")]
    pub proxy_target: Option<String>,

    /// Policy snapshots kept, so the admin API can say which was active at a given time.
    #[arg(long, env = "POLICY_VERSION_LIMIT", default_value_t = 100)]
    pub policy_version_limit: usize,

    /// Seconds between scans of POLICIES_DIR for changed files (0 turns hot reload off).
    #[arg(long, env = "POLICIES_RELOAD_SECONDS", default_value_t = 2)]
    pub policies_reload_seconds: u64,

    /// A signed policy bundle to load (read-only policies), e.g. one exported by another gateway
    /// at `GET /admin/policies/bundle`; its signature is `<file>.minisig`.
    #[arg(long, env = "POLICY_BUNDLE", requires = "policy_bundle_pubkey")]
    pub policy_bundle: Option<PathBuf>,

    /// The minisign public key the bundle must verify against; unsigned or altered bundles are
    /// refused with a log line and an alert.
    #[arg(long, env = "POLICY_BUNDLE_PUBKEY")]
    pub policy_bundle_pubkey: Option<PathBuf>,

    /// An ECDSA P-256 private key (PKCS#8 PEM): exported bundles also carry a cosign-style
    /// signature (`sig`, base64 DER over SHA-256) besides the minisign one.
    #[arg(long, env = "POLICY_BUNDLE_SIGNING_KEY")]
    pub policy_bundle_signing_key: Option<PathBuf>,

    /// Passphrase of an encrypted POLICY_BUNDLE_SIGNING_KEY.
    #[arg(
        long,
        env = "POLICY_BUNDLE_SIGNING_KEY_PASSPHRASE",
        hide_env_values = true
    )]
    pub policy_bundle_signing_key_passphrase: Option<String>,

    /// The vendor's license public key (PEM). When set, the gateway checks its license at start
    /// and every LICENSE_CHECK_SECONDS; when absent, licensing is off.
    #[arg(long, env = "LICENSE_PUBKEY")]
    pub license_pubkey: Option<PathBuf>,

    /// Where the installation id, activation request and installed license live. Defaults to
    /// `license/` beside the database.
    #[arg(long, env = "LICENSE_DIR")]
    pub license_dir: Option<PathBuf>,

    /// This installation's deployment mode; a license for another mode is not valid here.
    #[arg(long, env = "DEPLOYMENT_MODE", value_enum)]
    pub deployment_mode: Option<meshguard_license::DeploymentMode>,

    /// This installation's region; a license that does not list it is not valid here.
    #[arg(long, env = "REGION")]
    pub region: Option<String>,

    /// A redaction profile applied to every audit entry and alert before it is written or
    /// sent: none, or hipaa (the agent's payload as metadata only, ePHI identifiers redacted).
    #[arg(long, env = "AUDIT_REDACTION", default_value = "none")]
    pub audit_redaction: String,

    /// Policy changes need `X-MeshGuard-Approver` and `X-MeshGuard-Change-Ticket` (supervisory
    /// approval, as FINRA Rule 3110 asks); changes without them are refused.
    #[arg(long, env = "CHANGE_APPROVAL_REQUIRED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub change_approval_required: bool,

    /// The site's signed list of change approvers (JSON, meshguard-change-approvers/v1, with
    /// FILE.minisig). With it, a policy change needs an approver on the list (and a ticket),
    /// and the list is recorded in the audit log.
    #[arg(long, env = "CHANGE_APPROVERS")]
    pub change_approvers: Option<PathBuf>,

    /// The minisign public key that signs the change approver list (the site's key).
    #[arg(long, env = "CHANGE_APPROVERS_PUBKEY")]
    pub change_approvers_pubkey: Option<PathBuf>,

    /// Send every audit entry and alert to a SIEM as RFC 5424 syslog: `tcp://host:port`
    /// (RFC 6587 octet counting) or `tls://host:port` (RFC 5425). Off when unset.
    #[arg(long, env = "SIEM_SYSLOG_URL")]
    pub siem_syslog_url: Option<String>,

    /// The SIEM's CA (PEM) for tls://, besides CA_BUNDLE_FILE and the system's roots.
    #[arg(long, env = "SIEM_CA_FILE")]
    pub siem_ca_file: Option<PathBuf>,

    /// Where the SIEM forwarder keeps the last seq it delivered (default: `siem.cursor` beside
    /// the database).
    #[arg(long, env = "SIEM_CURSOR_FILE")]
    pub siem_cursor_file: Option<PathBuf>,

    /// The RFC 5424 structured-data ID of the gateway's parameters: `name@<enterprise number>`.
    #[arg(long, env = "SIEM_SD_ID", default_value = crate::siem::DEFAULT_SD_ID)]
    pub siem_sd_id: String,

    /// Seconds between license checks (which also pick up a license installed from the CLI).
    #[arg(long, env = "LICENSE_CHECK_SECONDS", default_value_t = 3600)]
    pub license_check_seconds: u64,

    /// Serve Prometheus metrics at `/metrics`.
    #[arg(long, env = "METRICS_ENABLED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_enabled: bool,

    /// A bearer token `/metrics` then requires (`Authorization: Bearer <token>`, as Prometheus's
    /// `authorization` setting sends it). Unset, `/metrics` answers anyone who reaches it, as the
    /// MeshGuard contract has it: keep it behind the network policy.
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Data-plane requests per minute from one client address (0 turns the limit off).
    #[arg(long, env = "RATE_LIMIT_RPM", default_value_t = 600)]
    pub rate_limit_rpm: u32,

    /// Seconds a request head has to arrive whole, on every listener (HTTP, HTTPS, the egress
    /// proxy); an idle kept-alive connection has the same time to send its next one.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 30)]
    pub http_header_timeout_seconds: u64,

    /// Seconds a forwarded call's body has to arrive whole; a slower one is refused (408).
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 60)]
    pub http_body_timeout_seconds: u64,

    /// Connections a listener holds at once; one more is closed at once.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,

    /// Connections one client address may hold at once on a listener.
    #[arg(long, env = "MAX_CONNECTIONS_PER_CLIENT", default_value_t = 1024)]
    pub max_connections_per_client: usize,

    /// Milliseconds one governance step (decide and record durably) may take before the
    /// circuit breaker answers instead: enforce mode denies, audit mode allows; either way the
    /// answer is the one recorded.
    #[arg(long, env = "CIRCUIT_BREAKER_MS", default_value_t = 100)]
    pub circuit_breaker_ms: u64,

    /// Seconds per window in which refused calls without a valid token, and rate-limited
    /// calls, of one kind are written as their first row plus one aggregate row (0: a row each).
    #[arg(long, env = "AUDIT_REFUSAL_WINDOW_SECONDS", default_value_t = 60)]
    pub audit_refusal_window_seconds: u64,

    /// Port of the egress proxy (HTTP CONNECT and absolute-form HTTP), on HOST; off when unset.
    /// It needs EGRESS_ALLOWLIST and EGRESS_ALLOWLIST_PUBKEY.
    #[arg(long, env = "EGRESS_PROXY_PORT")]
    pub egress_proxy_port: Option<u16>,

    /// The signed egress allowlist (JSON, meshguard-egress-allowlist/v1, with FILE.minisig);
    /// a newer signed file put in its place is taken without a restart.
    #[arg(long, env = "EGRESS_ALLOWLIST")]
    pub egress_allowlist: Option<PathBuf>,

    /// The minisign public key that signs the egress allowlist (the media key).
    #[arg(long, env = "EGRESS_ALLOWLIST_PUBKEY")]
    pub egress_allowlist_pubkey: Option<PathBuf>,

    /// Regions this site is pinned to, comma-separated: a destination tagged with another
    /// region is refused even if listed. Empty: no pinning.
    #[arg(long, env = "EGRESS_REGIONS", value_delimiter = ',')]
    pub egress_regions: Vec<String>,

    /// Seconds an upstream may take to answer a forwarded `/proxy/*` call (then 504).
    #[arg(long, env = "PROXY_TIMEOUT", default_value_t = 30)]
    pub proxy_timeout: u64,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Name of this gateway's audit log: the origin of its signed checkpoints and the source of
    /// its chain. Defaults to `<hostname>/meshguard-audit`.
    #[arg(long, env = "AUDIT_ORIGIN")]
    pub audit_origin: Option<String>,

    /// Ed25519 key that signs audit checkpoints (created on first start, mode 0600). Defaults to
    /// `audit-log.key` beside the database.
    #[arg(long, env = "AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,

    /// Directory of the audit log itself, in the C2SP tlog-tiles layout (entry bundles, hash
    /// tiles, the latest checkpoint); the database keeps an index of it. Defaults to
    /// `audit-log` beside the database.
    #[arg(long, env = "AUDIT_LOG_DIR")]
    pub audit_log_dir: Option<PathBuf>,

    /// Replace the audit checkpoint key, record the rotation in the log and exit (with the
    /// gateway stopped; docs/keys.md). The old key signs the handoff checkpoint too.
    #[arg(long)]
    pub rotate_audit_key: bool,

    /// With --rotate-audit-key: the old key is lost for good; the log records that only the new
    /// key signs the handoff.
    #[arg(long, requires = "rotate_audit_key")]
    pub audit_key_lost: bool,

    /// With --rotate-audit-key: the new key is this key in a PKCS#11 token (made there first,
    /// docs/keys.md); otherwise a new key file is made.
    #[arg(long, requires = "rotate_audit_key")]
    pub new_audit_key_uri: Option<String>,

    /// The audit checkpoint key in a PKCS#11 token, instead of AUDIT_KEY_FILE: an RFC 7512 URI,
    /// `pkcs11:token=<label>;object=<label>?module-path=<library>&pin-source=<file>`.
    #[arg(long, env = "AUDIT_KEY_URI", hide_env_values = true)]
    pub audit_key_uri: Option<String>,

    /// The policy-bundle key in a PKCS#11 token, instead of POLICY_BUNDLE_KEY_FILE (a URI as
    /// AUDIT_KEY_URI).
    #[arg(long, env = "POLICY_BUNDLE_KEY_URI", hide_env_values = true)]
    pub policy_bundle_key_uri: Option<String>,

    /// The key that seals alert-channel secrets as an AES-256 key in a PKCS#11 token, instead
    /// of SECRETS_KEY_FILE (a URI as AUDIT_KEY_URI). The first start with it moves secrets
    /// sealed under the key file into the token (keep the file in place for that start).
    #[arg(long, env = "SECRETS_KEY_URI", hide_env_values = true)]
    pub secrets_key_uri: Option<String>,

    /// Ed25519 key that signs exported policy bundles (minisign format; created on first start,
    /// mode 0600), a key of its own apart from the audit key. Defaults to `policy-bundle.key`
    /// beside the database.
    #[arg(long, env = "POLICY_BUNDLE_KEY_FILE")]
    pub policy_bundle_key_file: Option<PathBuf>,

    /// Site witnesses whose cosignatures of audit checkpoints are accepted: their verifier keys
    /// (type 0x04, cosignature/v1), comma-separated, as `meshguard-witness vkey` prints them.
    #[arg(long, env = "AUDIT_WITNESSES", value_delimiter = ',')]
    pub audit_witnesses: Vec<String>,

    /// Witnesses the gateway reaches over HTTP (C2SP tlog-witness): `name=url` pairs,
    /// comma-separated, each name among AUDIT_WITNESSES. Their cosignatures are fetched as
    /// checkpoints are signed.
    #[arg(long, env = "AUDIT_WITNESS_URLS", value_delimiter = ',')]
    pub audit_witness_urls: Vec<String>,

    /// How many of AUDIT_WITNESSES must cosign a checkpoint for it to count as witnessed
    /// (default: all of them).
    #[arg(long, env = "AUDIT_WITNESS_QUORUM")]
    pub audit_witness_quorum: Option<usize>,

    /// Sign an audit checkpoint after this many new entries (at most one a second)…
    #[arg(long, env = "AUDIT_CHECKPOINT_EVERY", default_value_t = 1000)]
    pub audit_checkpoint_every: u64,

    /// …or this many seconds after the last one, whichever comes first.
    #[arg(long, env = "AUDIT_CHECKPOINT_SECONDS", default_value_t = 60)]
    pub audit_checkpoint_seconds: u64,

    /// Triggers the environment-configured alert channels receive: deny, error, rate_limit, all.
    #[arg(long, env = "ALERT_ON", default_value = "deny,error,rate_limit")]
    pub alert_on: String,

    /// Hosts (names or addresses, comma-separated) that may receive alerts although they are
    /// loopback, link-local or metadata addresses, or resolve to them; see docs/security.md.
    #[arg(long, env = "ALERT_DESTINATIONS_ALLOWED", default_value = "")]
    pub alert_destinations_allowed: String,

    /// Webhook that receives alerts (in addition to channels created through the API).
    #[arg(long, env = "ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,

    /// Secret that signs webhook alerts (`X-MeshGuard-Signature: sha256=…`).
    #[arg(long, env = "ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,

    /// Slack incoming webhook that receives alerts.
    #[arg(long, env = "ALERT_SLACK_WEBHOOK", hide_env_values = true)]
    pub alert_slack_webhook: Option<String>,

    /// Alerts per minute; more are dropped with a warning.
    #[arg(long, env = "ALERT_RATE_LIMIT", default_value_t = 10)]
    pub alert_rate_limit: u32,

    /// Instance name in alerts.
    #[arg(long, env = "ALERT_INSTANCE_NAME", default_value = "meshguard-gateway")]
    pub alert_instance_name: String,

    /// Environment name in alerts.
    #[arg(long, env = "ALERT_ENVIRONMENT", default_value = "production")]
    pub alert_environment: String,

    /// Delivery attempts per alert and channel.
    #[arg(long, env = "ALERT_RETRY_ATTEMPTS", default_value_t = 5)]
    pub alert_retry_attempts: u32,

    /// First retry delay in milliseconds; each retry doubles it.
    #[arg(long, env = "ALERT_RETRY_BACKOFF_MS", default_value_t = 500)]
    pub alert_retry_backoff_ms: u64,

    /// Log filter: error, warn, info, debug, or a tracing directive.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Development mode: generate the admin token and JWT secret when they are not set, and
    /// print the admin token once. Never use in production.
    #[arg(long)]
    pub dev: bool,
}

/// The arguments hold every secret of the gateway (admin token, JWT secret, webhook secrets,
/// passphrases, the database URL's password), so their debug form names none of them: only
/// where the gateway listens.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Denied requests are blocked.
    Enforce,
    /// Everything is allowed; would-be denials are reported.
    Audit,
    /// Everything is allowed without evaluation.
    Bypass,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Bypass => "bypass",
        }
    }
}

/// Checked configuration.
#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub admin_token: String,
    pub jwt_secret: String,
    pub jwt_ttl: Duration,
    pub db_path: PathBuf,
    pub policies_dir: PathBuf,
    pub mode: Mode,
    pub proxy_target: Option<String>,
    pub proxy_timeout: Duration,
    pub rate_limit_rpm: u32,
    /// The bounds of every listener.
    pub connections: crate::listen::Limits,
    pub circuit_breaker: Duration,
    pub audit_refusal_window: Duration,
    pub metrics_enabled: bool,
    pub metrics_token: Option<String>,
    pub policy_bundle: Option<PathBuf>,
    pub policy_bundle_pubkey: Option<PathBuf>,
    pub policy_bundle_signing_key: Option<PathBuf>,
    pub(crate) policy_bundle_signing_key_passphrase: Option<String>,
    pub policy_version_limit: usize,
    pub policies_reload: Duration,
    pub max_body_bytes: usize,
    pub audit_origin: String,
    pub audit_key_file: PathBuf,
    pub audit_log_dir: PathBuf,
    pub(crate) audit_key_uri: Option<String>,
    pub policy_bundle_key_file: PathBuf,
    pub(crate) policy_bundle_key_uri: Option<String>,
    pub(crate) secrets_key_uri: Option<String>,
    pub secrets_key_file: PathBuf,
    /// The secrets key in base64, when given so (a secret).
    pub(crate) secrets_key: Option<String>,
    /// The shared PostgreSQL control plane, when set (a secret: it holds the password).
    pub(crate) database_url: Option<String>,
    pub(crate) control_plane_poll: Duration,
    /// CA_BUNDLE_FILE, for the clients that take PEM themselves (PostgreSQL's TLS).
    pub(crate) ca_bundle_file: Option<PathBuf>,
    pub audit_witnesses: Vec<String>,
    pub audit_witness_quorum: usize,
    pub(crate) audit_witness_urls: Vec<crate::witness_push::Connected>,
    pub egress_proxy_port: Option<u16>,
    pub egress_allowlist: Option<PathBuf>,
    pub egress_allowlist_pubkey: Option<PathBuf>,
    pub egress_regions: Vec<String>,
    pub audit_checkpoint_every: u64,
    pub audit_checkpoint_interval: Duration,
    pub(crate) alerts: crate::alerts::AlertConfig,
    /// Set when this process is an agent's guardian sidecar.
    pub sidecar: Option<crate::sidecar::SidecarConfig>,
    /// `(certificate, key)` PEM files: the listener serves HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The CAs whose client certificates the admin API requires (`ADMIN_CLIENT_CA_FILE`).
    pub admin_client_ca: Option<PathBuf>,
    /// The site CA bundle's certificates, trusted by outbound calls.
    pub(crate) extra_roots: Vec<reqwest::Certificate>,
    pub license_pubkey: Option<PathBuf>,
    pub license_dir: PathBuf,
    pub deployment_mode: Option<meshguard_license::DeploymentMode>,
    pub region: Option<String>,
    pub license_check_interval: Duration,
    pub(crate) audit_redaction: crate::redaction::Redaction,
    pub change_approval_required: bool,
    /// The site's signed change approver list (`CHANGE_APPROVERS`), verified at start.
    pub(crate) change_approvers: Option<crate::approvers::Approvers>,
    /// SIEM egress (`SIEM_SYSLOG_URL`), when on.
    pub(crate) siem: Option<crate::siem::SiemConfig>,
    /// Set when `--dev` generated the admin token, so `main` can print it once.
    pub generated_admin_token: bool,
}

impl Config {
    /// Where the audit checkpoint key is: the token AUDIT_KEY_URI names, else AUDIT_KEY_FILE.
    pub(crate) fn audit_key(&self) -> crate::audit::keys::KeySource {
        match &self.audit_key_uri {
            Some(uri) => crate::audit::keys::KeySource::Token(uri.clone()),
            None => crate::audit::keys::KeySource::File(self.audit_key_file.clone()),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_token", &"<redacted>")
            .field("jwt_secret", &"<redacted>")
            .field("jwt_ttl", &self.jwt_ttl)
            .field("db_path", &self.db_path)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("policies_dir", &self.policies_dir)
            .field("mode", &self.mode)
            .field("proxy_target", &self.proxy_target)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("audit_origin", &self.audit_origin)
            .field("audit_key_file", &self.audit_key_file)
            .field("audit_log_dir", &self.audit_log_dir)
            .field("policy_bundle_key_file", &self.policy_bundle_key_file)
            .finish()
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{name} is not set; set it to a random value (e.g. `openssl rand -hex 32`), or run with --dev to generate one"
    )]
    Missing { name: &'static str },
    #[error("{name} is too weak: {why}; use a random value such as `openssl rand -hex 32`")]
    Weak { name: &'static str, why: String },
    #[error("JWT_EXPIRES_IN {value:?} is not a duration: {why}; use a form such as 24h, 7d or 90m")]
    Ttl { value: String, why: String },
    #[error("MAX_BODY_BYTES must be at least 1024")]
    BodyLimit,
    #[error("ALERT_ON has {value:?}; expected a comma list of deny, error, rate_limit, allow, all")]
    AlertOn { value: String },
    #[error(
        "AUDIT_ORIGIN {value:?} must have no spaces and no '+'; use a schemaless URL such as gw.example.com/meshguard-audit"
    )]
    Origin { value: String },
    #[error(
        "EGRESS_PROXY_PORT is set, but {0} is not: the egress proxy needs a signed allowlist and its key"
    )]
    Egress(&'static str),
    #[error("AUDIT_WITNESSES: {0}; give each witness's key as `meshguard-witness vkey` prints it")]
    Witness(String),
    #[error("AUDIT_WITNESS_QUORUM is {quorum}, but AUDIT_WITNESSES names {witnesses} witness(es)")]
    Quorum { quorum: usize, witnesses: usize },
    #[error("{0}")]
    Sidecar(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Setting(String),
    #[error("MODE (--mode) is {value:?}; use enforce, audit or bypass")]
    Mode { value: String },
}

impl Args {
    /// Checks every setting, in the order an operator reads the errors, and builds the
    /// configuration from what passed.
    pub fn into_config(mut self) -> Result<Config, ConfigError> {
        let mode = parse_mode(&self.mode)?;
        let sidecar = crate::sidecar::SidecarConfig::from_args(&mut self)?;
        if sidecar.is_some() {
            // A sidecar serves no admin API and issues no tokens: these are never compared
            // with anything a caller sends, so random values lock those paths shut.
            self.admin_token = Some(format!("msat_{}", crate::ids::new_secret(40)));
            self.jwt_secret = Some(crate::ids::new_secret(64));
        }
        let credentials = Credentials::from_args(&mut self)?;
        let jwt_ttl = parse_duration(&self.jwt_expires_in).map_err(|why| ConfigError::Ttl {
            value: self.jwt_expires_in.clone(),
            why,
        })?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::BodyLimit);
        }
        let files = Files::from_args(&mut self)?;
        let on = alert_triggers(&self.alert_on)?;
        let tls = TlsFiles::from_args(&mut self)?;
        let redaction = crate::redaction::Redaction::parse(&self.audit_redaction)
            .map_err(ConfigError::Setting)?;
        let alerts = self.alerts(on, redaction, &tls.extra_roots)?;
        let siem = self.siem(&files)?;
        let witnesses = Witnesses::from_args(&self)?;
        self.check_egress()?;
        let change_approvers = self.change_approvers()?;
        let checked = Checked {
            mode,
            sidecar,
            credentials,
            jwt_ttl,
            files,
            tls,
            redaction,
            alerts,
            siem,
            witnesses,
            change_approvers,
        };
        Ok(self.assemble(checked))
    }

    /// The alert channels: each destination URL checked against the allowed destinations.
    fn alerts(
        &mut self,
        on: Vec<meshguard_api::Trigger>,
        redaction: crate::redaction::Redaction,
        extra_roots: &[reqwest::Certificate],
    ) -> Result<crate::alerts::AlertConfig, ConfigError> {
        let destinations = std::sync::Arc::new(crate::destinations::Destinations::new(
            &self.alert_destinations_allowed,
            self.host
                .zip(self.port)
                .map(|(ip, port)| std::net::SocketAddr::new(ip, port)),
        ));
        for (name, url) in [
            ("ALERT_WEBHOOK_URL", &self.alert_webhook_url),
            ("ALERT_SLACK_WEBHOOK", &self.alert_slack_webhook),
        ] {
            if let Some(url) = url.as_deref().filter(|u| !u.is_empty()) {
                destinations
                    .check_url(url)
                    .map_err(|e| ConfigError::Setting(format!("{name}: {e}")))?;
            }
        }
        Ok(crate::alerts::AlertConfig {
            destinations,
            redaction,
            extra_roots: extra_roots.to_vec(),
            on,
            webhook_url: self.alert_webhook_url.take().filter(|u| !u.is_empty()),
            webhook_secret: self.alert_webhook_secret.take().filter(|u| !u.is_empty()),
            slack_webhook: self.alert_slack_webhook.take().filter(|u| !u.is_empty()),
            per_minute: self.alert_rate_limit,
            instance: std::mem::take(&mut self.alert_instance_name),
            environment: std::mem::take(&mut self.alert_environment),
            attempts: self.alert_retry_attempts.clamp(1, 20),
            backoff: Duration::from_millis(self.alert_retry_backoff_ms.clamp(1, 60_000)),
        })
    }

    /// The SIEM syslog forwarder, when `SIEM_SYSLOG_URL` is set.
    fn siem(&self, files: &Files) -> Result<Option<crate::siem::SiemConfig>, ConfigError> {
        let Some(url) = self.siem_syslog_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let cas: Vec<&std::path::Path> = self
            .siem_ca_file
            .iter()
            .chain(self.ca_bundle_file.iter())
            .map(PathBuf::as_path)
            .collect();
        let cursor = self.siem_cursor_file.clone().unwrap_or_else(|| {
            files
                .db_path
                .parent()
                .map(|d| d.join("siem.cursor"))
                .unwrap_or_else(|| PathBuf::from("siem.cursor"))
        });
        crate::siem::SiemConfig::parse(
            url,
            &cas,
            cursor,
            files.audit_origin.split('/').next().unwrap_or_default(),
            &self.siem_sd_id,
        )
        .map(Some)
        .map_err(ConfigError::Setting)
    }

    /// The egress proxy needs its signed allowlist and the key that signs it.
    fn check_egress(&self) -> Result<(), ConfigError> {
        if self.egress_proxy_port.is_some() {
            if self.egress_allowlist.is_none() {
                return Err(ConfigError::Egress("EGRESS_ALLOWLIST"));
            }
            if self.egress_allowlist_pubkey.is_none() {
                return Err(ConfigError::Egress("EGRESS_ALLOWLIST_PUBKEY"));
            }
        }
        Ok(())
    }

    /// The signed list of change approvers, when `CHANGE_APPROVERS` is set.
    fn change_approvers(&mut self) -> Result<Option<crate::approvers::Approvers>, ConfigError> {
        match (
            self.change_approvers
                .take()
                .filter(|p| !p.as_os_str().is_empty()),
            self.change_approvers_pubkey.take(),
        ) {
            (None, _) => Ok(None),
            (Some(_), None) => Err(ConfigError::Setting(
                "CHANGE_APPROVERS is set, but CHANGE_APPROVERS_PUBKEY is not: give the site's minisign public key that signs the list".to_owned(),
            )),
            (Some(list), Some(key)) => crate::approvers::Approvers::load(&list, &key)
                .map(Some)
                .map_err(|e| ConfigError::Setting(format!("CHANGE_APPROVERS: {e}"))),
        }
    }

    /// The configuration from the checked parts and the settings that need no check (bounds
    /// are clamped here). One line per field of `Config`.
    fn assemble(mut self, checked: Checked) -> Config {
        let Checked {
            mode,
            sidecar,
            credentials,
            jwt_ttl,
            files,
            tls,
            redaction,
            alerts,
            siem,
            witnesses,
            change_approvers,
        } = checked;
        let (default_host, default_port) = match sidecar {
            Some(_) => (IpAddr::from([127, 0, 0, 1]), 4000),
            None => (IpAddr::from([0, 0, 0, 0]), 3100),
        };
        Config {
            change_approvers,
            egress_proxy_port: self.egress_proxy_port,
            egress_allowlist: self.egress_allowlist,
            egress_allowlist_pubkey: self.egress_allowlist_pubkey,
            egress_regions: trimmed(&self.egress_regions),
            alerts,
            siem,
            audit_redaction: redaction,
            change_approval_required: self.change_approval_required,
            audit_witnesses: witnesses.keys,
            audit_witness_quorum: witnesses.quorum,
            audit_witness_urls: witnesses.urls,
            license_pubkey: self.license_pubkey.filter(|p| !p.as_os_str().is_empty()),
            license_dir: files.license_dir,
            deployment_mode: self.deployment_mode,
            region: self.region.filter(|r| !r.is_empty()),
            license_check_interval: Duration::from_secs(self.license_check_seconds.max(1)),
            audit_origin: files.audit_origin,
            audit_key_file: files.audit_key_file,
            audit_log_dir: files.audit_log_dir,
            audit_key_uri: self.audit_key_uri.take(),
            policy_bundle_key_file: files.policy_bundle_key_file,
            policy_bundle_key_uri: self.policy_bundle_key_uri.take(),
            secrets_key_uri: self.secrets_key_uri.take(),
            secrets_key_file: files.secrets_key_file,
            secrets_key: self.secrets_key.take().filter(|k| !k.is_empty()),
            database_url: self.database_url.take().filter(|u| !u.is_empty()),
            control_plane_poll: Duration::from_millis(self.control_plane_poll_ms.max(10)),
            ca_bundle_file: self.ca_bundle_file.clone(),
            audit_checkpoint_every: self.audit_checkpoint_every.max(1),
            audit_checkpoint_interval: Duration::from_secs(self.audit_checkpoint_seconds.max(1)),
            host: self.host.unwrap_or(default_host),
            port: self.port.unwrap_or(default_port),
            sidecar,
            tls: tls.server,
            admin_client_ca: tls.admin_client_ca,
            extra_roots: tls.extra_roots,
            admin_token: credentials.admin_token,
            jwt_secret: credentials.jwt_secret,
            jwt_ttl,
            db_path: files.db_path,
            policies_dir: self.policies_dir,
            mode,
            proxy_target: self.proxy_target.filter(|t| !t.is_empty()),
            proxy_timeout: Duration::from_secs(self.proxy_timeout.clamp(1, 3600)),
            rate_limit_rpm: self.rate_limit_rpm,
            connections: crate::listen::Limits {
                max_connections: self.max_connections.clamp(1, 1 << 20),
                max_per_client: self.max_connections_per_client.clamp(1, 1 << 20),
                header_timeout: Duration::from_secs(
                    self.http_header_timeout_seconds.clamp(1, 3600),
                ),
                body_timeout: Duration::from_secs(self.http_body_timeout_seconds.clamp(1, 3600)),
            },
            circuit_breaker: Duration::from_millis(self.circuit_breaker_ms.min(60_000)),
            audit_refusal_window: Duration::from_secs(
                self.audit_refusal_window_seconds.min(86_400),
            ),
            metrics_enabled: self.metrics_enabled,
            metrics_token: credentials.metrics_token,
            policy_bundle: self.policy_bundle,
            policy_bundle_pubkey: self.policy_bundle_pubkey,
            policy_bundle_signing_key: self.policy_bundle_signing_key,
            policy_bundle_signing_key_passphrase: self
                .policy_bundle_signing_key_passphrase
                .filter(|p| !p.is_empty()),
            policy_version_limit: self.policy_version_limit.max(1),
            policies_reload: Duration::from_secs(self.policies_reload_seconds),
            max_body_bytes: self.max_body_bytes,
            generated_admin_token: credentials.generated_admin_token,
        }
    }
}

/// What `into_config` checked, handed to `assemble`.
struct Checked {
    mode: Mode,
    sidecar: Option<crate::sidecar::SidecarConfig>,
    credentials: Credentials,
    jwt_ttl: Duration,
    files: Files,
    tls: TlsFiles,
    redaction: crate::redaction::Redaction,
    alerts: crate::alerts::AlertConfig,
    siem: Option<crate::siem::SiemConfig>,
    witnesses: Witnesses,
    change_approvers: Option<crate::approvers::Approvers>,
}

/// The database, the audit origin and the files kept beside the database by default.
struct Files {
    db_path: PathBuf,
    audit_origin: String,
    audit_key_file: PathBuf,
    audit_log_dir: PathBuf,
    policy_bundle_key_file: PathBuf,
    secrets_key_file: PathBuf,
    license_dir: PathBuf,
}

impl Files {
    fn from_args(args: &mut Args) -> Result<Self, ConfigError> {
        let db_path = args
            .db_path
            .clone()
            .or_else(|| std::env::var_os("AUDIT_DB_PATH").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./data/meshguard.db"));
        let audit_origin = args
            .audit_origin
            .take()
            .filter(|o| !o.is_empty())
            .unwrap_or_else(default_origin);
        if audit_origin.contains(char::is_whitespace) || audit_origin.contains('+') {
            return Err(ConfigError::Origin {
                value: audit_origin,
            });
        }
        let or_beside =
            |given: Option<PathBuf>, name: &str| given.unwrap_or_else(|| beside(&db_path, name));
        Ok(Self {
            audit_key_file: or_beside(args.audit_key_file.take(), "audit-log.key"),
            audit_log_dir: or_beside(args.audit_log_dir.take(), "audit-log"),
            policy_bundle_key_file: or_beside(
                args.policy_bundle_key_file.take(),
                "policy-bundle.key",
            ),
            secrets_key_file: or_beside(args.secrets_key_file.take(), "secrets.key"),
            license_dir: or_beside(args.license_dir.take(), "license"),
            db_path,
            audit_origin,
        })
    }
}

/// The extra trust roots, the server's certificate pair and the admin client CA, each loaded
/// now so a wrong path or a mismatched pair stops the start with why.
struct TlsFiles {
    extra_roots: Vec<reqwest::Certificate>,
    server: Option<(PathBuf, PathBuf)>,
    admin_client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn from_args(args: &mut Args) -> Result<Self, ConfigError> {
        let extra_roots = match &args.ca_bundle_file {
            Some(p) => crate::tls::extra_roots(p).map_err(ConfigError::Tls)?,
            None => Vec::new(),
        };
        let server = match (args.tls_cert_file.take(), args.tls_key_file.take()) {
            (Some(c), Some(k)) => {
                crate::tls::load(&c, &k).map_err(ConfigError::Tls)?;
                Some((c, k))
            }
            _ => None,
        };
        let admin_client_ca = match args.admin_client_ca_file.take() {
            Some(p) => {
                crate::tls::client_roots(&p).map_err(ConfigError::Tls)?;
                Some(p)
            }
            None => None,
        };
        Ok(Self {
            extra_roots,
            server,
            admin_client_ca,
        })
    }
}

/// The witnesses whose cosignatures a checkpoint needs, their URLs and the quorum.
struct Witnesses {
    keys: Vec<String>,
    urls: Vec<crate::witness_push::Connected>,
    quorum: usize,
}

impl Witnesses {
    fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let keys = trimmed(&args.audit_witnesses);
        for w in &keys {
            meshguard_tlog::note::Vkey::parse_of_type(w, meshguard_tlog::note::COSIGNATURE_V1)
                .map_err(|e| ConfigError::Witness(e.to_string()))?;
        }
        let urls = crate::witness_push::parse(&args.audit_witness_urls, &keys)
            .map_err(ConfigError::Setting)?;
        let quorum = args.audit_witness_quorum.unwrap_or(keys.len());
        if quorum > keys.len() || (quorum == 0 && !keys.is_empty()) {
            return Err(ConfigError::Quorum {
                quorum,
                witnesses: keys.len(),
            });
        }
        Ok(Self { keys, urls, quorum })
    }
}

/// The non-empty entries of a list setting, trimmed.
fn trimmed(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The admin token, the JWT secret and the metrics token, checked; in dev mode the first two
/// are generated when not given.
struct Credentials {
    admin_token: String,
    generated_admin_token: bool,
    jwt_secret: String,
    metrics_token: Option<String>,
}

impl Credentials {
    fn from_args(args: &mut Args) -> Result<Self, ConfigError> {
        let mut generated_admin_token = false;
        let admin_token = match (args.admin_token.take().filter(|t| !t.is_empty()), args.dev) {
            (Some(t), _) => {
                check_secret("ADMIN_TOKEN", &t, 24)?;
                t
            }
            (None, true) => {
                generated_admin_token = true;
                format!("msat_{}", crate::ids::new_secret(40))
            }
            (None, false) => {
                return Err(ConfigError::Missing {
                    name: "ADMIN_TOKEN",
                });
            }
        };
        let metrics_token = match args.metrics_token.take().filter(|t| !t.is_empty()) {
            Some(t) => {
                check_secret("METRICS_TOKEN", &t, 24)?;
                Some(t)
            }
            None => None,
        };
        let jwt_secret = match (args.jwt_secret.take().filter(|t| !t.is_empty()), args.dev) {
            (Some(s), _) => {
                check_secret("JWT_SECRET", &s, 32)?;
                s
            }
            (None, true) => crate::ids::new_secret(64),
            (None, false) => return Err(ConfigError::Missing { name: "JWT_SECRET" }),
        };
        Ok(Self {
            admin_token,
            generated_admin_token,
            jwt_secret,
            metrics_token,
        })
    }
}

fn parse_mode(value: &str) -> Result<Mode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "enforce" => Ok(Mode::Enforce),
        "audit" => Ok(Mode::Audit),
        "bypass" => Ok(Mode::Bypass),
        _ => Err(ConfigError::Mode {
            value: value.to_owned(),
        }),
    }
}

/// `<hostname>/meshguard-audit` (`localhost` when the host has no name).
fn default_origin() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "localhost"
    } else {
        host.as_str()
    };
    format!("{host}/meshguard-audit")
}

/// `name` in the database's directory: where the gateway keeps its keys and state by default.
fn beside(db_path: &Path, name: &str) -> PathBuf {
    db_path
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// `ALERT_ON`: a comma list of deny, error, rate_limit, allow, all.
fn alert_triggers(value: &str) -> Result<Vec<meshguard_api::Trigger>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t {
            "deny" => Ok(meshguard_api::Trigger::Deny),
            "error" => Ok(meshguard_api::Trigger::Error),
            "rate_limit" => Ok(meshguard_api::Trigger::RateLimit),
            "allow" => Ok(meshguard_api::Trigger::Allow),
            "all" => Ok(meshguard_api::Trigger::All),
            other => Err(ConfigError::AlertOn {
                value: other.to_owned(),
            }),
        })
        .collect()
}

fn check_secret(name: &'static str, value: &str, min_len: usize) -> Result<(), ConfigError> {
    if value.chars().count() < min_len {
        return Err(ConfigError::Weak {
            name,
            why: format!(
                "it has {} characters and at least {min_len} are required",
                value.chars().count()
            ),
        });
    }
    let mut distinct: Vec<char> = value.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 8 {
        return Err(ConfigError::Weak {
            name,
            why: format!("it uses only {} distinct characters", distinct.len()),
        });
    }
    Ok(())
}

/// Parses `24h`, `7d`, `90m`, `3600s`, `1h 30m`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["meshguard-gateway"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn missing_and_weak_secrets_are_refused_with_advice() {
        let err = args(&["--jwt-secret", "0123456789abcdef0123456789abcdef"])
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("ADMIN_TOKEN is not set"), "{err}");
        let err = args(&[
            "--admin-token",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("distinct characters"), "{err}");
        let err = args(&[
            "--admin-token",
            "0123456789abcdefghijklmn",
            "--jwt-secret",
            "short",
        ])
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET is too weak"), "{err}");
    }

    #[test]
    fn dev_generates_what_is_missing() {
        let c = args(&["--dev"]).into_config().unwrap();
        assert!(c.generated_admin_token && c.admin_token.starts_with("msat_"));
        assert_eq!(c.jwt_secret.len(), 64);
        assert_eq!(c.jwt_ttl, Duration::from_secs(24 * 3600));
        assert!(!format!("{c:?}").contains(&c.admin_token));
    }

    #[test]
    fn durations_take_the_documented_forms() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("3600").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
    }
}
