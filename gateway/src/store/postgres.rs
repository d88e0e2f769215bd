//! The PostgreSQL store: one control plane shared by several gateways (`DATABASE_URL`).
//!
//! Each write commits its object and its change record in one transaction, as in SQLite. Two
//! things are added for several writers:
//! - every write transaction first takes one transaction-scoped advisory lock, so change records
//!   commit in the order of their `seq`. A gateway following the `changes` table by `seq` (see
//!   `cluster.rs`) can then never skip a record that committed late under a smaller number.
//! - every write sends `NOTIFY meshguard_changes` in its transaction (delivered at commit), which
//!   wakes the other gateways' followers at once; they also poll, so a lost notification only
//!   delays a change by one poll interval.
//!
//! What stays local to each gateway, in its SQLite file: its audit log's index and keys (each
//! gateway is a log origin of its own) and the guardian sidecars it holds entries for, whose
//! counts and Merkle frontiers describe entries in that local index.
//!
//! A connection that cannot be made, or is lost, is [`StoreError::Unavailable`]: the admin API
//! answers 503 and changes nothing, while decisions go on from the policy snapshot and the agent
//! cache. TLS is required unless the URL's `sslmode` says otherwise (libpq's default, `prefer`,
//! falls back to clear text when the server offers no TLS, so a URL without `sslmode` gets
//! `require` here; `sslmode=prefer` or `disable` are taken as written, with a warning), and the
//! server's certificate and name are always verified (rustls; the built-in roots and
//! CA_BUNDLE_FILE). Connections are pooled by hand (a `Mutex<Vec<Client>>`): the store is called from the
//! blocking pool, a handful of connections suffices, and r2d2 or deadpool would add a crate and,
//! for deadpool, an async API the synchronous `Store` trait would have to block on anyway.

mod adopt;
mod license;

use std::sync::Mutex;
use std::time::Duration;

use meshguard_api::ChangeRecord;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Transaction};
use serde_json::Value;

use super::dialect::{self, Cells, Param};
use super::tables::{self, Statement};
use super::{
    AgentRecord, ChangeDraft, ChangeFilter, ChannelRecord, PolicyRecord, SidecarRecord,
    SqliteStore, Store, StoreError, Write,
};

/// Schema migrations, applied in order under an advisory lock (gateways may start together);
/// the index + 1 is the schema version, recorded in `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    // 1: the control plane, as SQLite's migrations 1, 3, 10 and 11 left it.
    "CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        trust_tier TEXT NOT NULL,
        tags TEXT NOT NULL,
        metadata TEXT NOT NULL,
        capabilities TEXT NOT NULL,
        description TEXT,
        token_ttl BIGINT,
        token_version BIGINT NOT NULL,
        revision BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        content TEXT NOT NULL,
        revision BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE alert_channels (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        revision BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        timestamp TEXT NOT NULL,
        kind TEXT NOT NULL,
        object_id TEXT NOT NULL,
        object_name TEXT,
        operation TEXT NOT NULL,
        fields TEXT NOT NULL,
        before TEXT,
        after TEXT,
        old_digest TEXT,
        new_digest TEXT,
        approver TEXT,
        change_ticket TEXT,
        trace_id TEXT,
        deployed_at TEXT,
        rollback_ref TEXT
    );
    CREATE INDEX changes_object ON changes (kind, object_id);
    CREATE TABLE alert_failures (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        failed_at TEXT NOT NULL
    );
    CREATE TABLE alert_deliveries (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX alert_deliveries_at ON alert_deliveries (at);",
    // 2: settings every gateway must agree on, first of all the id of the key that seals
    // alert-channel secrets (a gateway with another key would seal what the others cannot open).
    "CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 3: the central audit index: every gateway's log entries, copied behind its log, with the
    // origin's keys and latest signed checkpoint so one verify checks every origin.
    "CREATE TABLE audit_origins (
        origin TEXT PRIMARY KEY,
        keys TEXT NOT NULL,
        size BIGINT NOT NULL,
        checkpoint_size BIGINT,
        checkpoint TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE audit_index (
        origin TEXT NOT NULL,
        seq BIGINT NOT NULL,
        source TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        agent_id TEXT,
        agent_name TEXT,
        action TEXT NOT NULL,
        decision TEXT NOT NULL,
        trace_id TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (origin, seq)
    );
    CREATE INDEX audit_index_time ON audit_index (timestamp);
    CREATE INDEX audit_index_agent ON audit_index (agent_id, timestamp);
    CREATE INDEX audit_index_agent_name ON audit_index (agent_name, timestamp);",
    // 4: a create's Idempotency-Key, so a retried create answers the object it made.
    "ALTER TABLE changes ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX changes_idempotency_key ON changes (idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
    // 5: one installation for every gateway on this database: its license records (the
    // installation id, the pending request, the installed license and activation, the clock's
    // high-water mark) and each serving gateway's lease, for the license's maxGateways.
    "CREATE TABLE license_records (
        name TEXT PRIMARY KEY,
        body BYTEA NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE gateway_leases (
        id TEXT PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL
    );",
];

/// The advisory lock every write transaction takes (and migrations, at session scope).
const WRITE_LOCK: i64 = 0x6d67_7761_7465; // "mgwate"
/// The channel writes notify and followers listen on.
pub(crate) const CHANNEL: &str = "meshguard_changes";
/// Idle connections kept for reuse.
const IDLE_MAX: usize = 8;

pub(crate) struct PgStore {
    config: postgres::Config,
    /// TLS as the URL's `sslmode` asks (`require` when it names none), the server's certificate
    /// verified against the built-in roots and CA_BUNDLE_FILE, its name against the URL's host.
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// `host:port/database`, for logs and errors: never the password.
    shown: String,
    /// What a failed connection adds when TLS was required because the URL named no `sslmode`.
    tls_hint: &'static str,
    idle: Mutex<Vec<Client>>,
    secrets: Option<super::secrets::SecretBox>,
    /// This gateway's own SQLite file: the sidecars it holds entries for.
    local: SqliteStore,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    /// A synchronous client closes through its own runtime, which must not start on a thread
    /// that drives async tasks (the store may be dropped there, at shutdown): the idle clients
    /// are closed on a thread of their own.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// A TLS connector trusting the built-in (Mozilla) roots and the site's CA bundle.
fn tls_connector(
    ca_bundle: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read CA_BUNDLE_FILE {}: {e}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| {
                format!("CA_BUNDLE_FILE {} is not a PEM bundle: {e}", path.display())
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "CA_BUNDLE_FILE {} holds a certificate rustls refuses: {e}",
                    path.display()
                )
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("cannot set up TLS for PostgreSQL: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Requires TLS when `url` names no `sslmode` (libpq's default, `prefer`, would fall back to
/// clear text when the server offers no TLS); warns when the URL asks for `prefer` or
/// `disable` over TCP. A Unix socket is left as it is (libpq ignores sslmode there). Returns
/// what a failed connection should add.
fn tls_by_default(config: &mut postgres::Config, url: &str, shown: &str) -> &'static str {
    use postgres::config::{Host, SslMode};
    if config
        .get_hosts()
        .iter()
        .all(|h| matches!(h, Host::Unix(_)))
    {
        return "";
    }
    if !names_sslmode(config, url) {
        config.ssl_mode(SslMode::Require);
        return " (DATABASE_URL names no sslmode, so TLS is required; a server without TLS needs sslmode=disable in the URL, on a network you trust)";
    }
    if config.get_ssl_mode() != SslMode::Require {
        tracing::warn!(
            database = shown,
            "DATABASE_URL's sslmode allows clear text: the control plane's credentials and data may cross the network unencrypted; use sslmode=require"
        );
    }
    ""
}

/// Whether `url` sets `sslmode` itself, as its parser reads it (a key, percent-encoded or not;
/// never the text "sslmode" in a password or a name): parsed again with `sslmode=require`
/// given first, an sslmode of its own still wins, so the two parses agree only if it has one.
fn names_sslmode(config: &postgres::Config, url: &str) -> bool {
    let defaulted = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => format!("{base}?sslmode=require&{query}"),
            None => format!("{url}?sslmode=require"),
        }
    } else {
        format!("sslmode=require {url}")
    };
    defaulted
        .parse::<postgres::Config>()
        .is_ok_and(|d| d.get_ssl_mode() == config.get_ssl_mode())
}

/// Where a connection URL points, without its password: every host it lists (a multi-host URL
/// names the primary's candidates, libpq-style), each with its port, and the database.
fn describe(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            // One port for every host, or one each, as the URL gave them.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{hosts}/{db}")
}

impl PgStore {
    /// Connects to `url`, applies the migrations this gateway knows, and keeps `local` for what
    /// stays with this gateway. The error never repeats the URL (it holds the password).
    pub(crate) fn open(
        url: &str,
        local: SqliteStore,
        ca_bundle: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            format!(
                "DATABASE_URL is not a PostgreSQL connection URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE): {e}"
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("meshguard-gateway");
        let shown = describe(&config);
        let tls_hint = tls_by_default(&mut config, url, &shown);
        let store = Self {
            config,
            tls: tls_connector(ca_bundle)?,
            shown,
            tls_hint,
            idle: Mutex::new(Vec::new()),
            secrets: None,
            local,
        };
        let mut client = store.connect().map_err(|e| e.to_string())?;
        migrate(&mut client, &store.shown)?;
        store.put_back(client);
        Ok(store)
    }

    /// `host:port/database`, as logs may show it.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    fn connect(&self) -> Result<Client, StoreError> {
        self.config.connect(self.tls.clone()).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {}{}",
                self.shown,
                error_text(&e),
                self.tls_hint
            ))
        })
    }

    fn take(&self) -> Option<Client> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_back(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(client);
        }
    }

    /// Runs a read on a pooled connection; a pooled connection the server closed (it restarted)
    /// is replaced by a new one once.
    pub(super) fn read<T>(
        &self,
        f: impl Fn(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if let Some(mut client) = self.take() {
            match f(&mut client) {
                Ok(v) => {
                    self.put_back(client);
                    return Ok(v);
                }
                Err(e) if !lost(&e) => {
                    self.put_back(client);
                    return Err(classify(&e));
                }
                Err(_) => {} // the server closed it: try a new connection
            }
        }
        let mut client = self.connect()?;
        let out = f(&mut client).map_err(|e| classify(&e));
        self.put_back(client);
        out
    }

    /// The row `st` reads (an error if it reads more than one), mapped by `map`.
    fn one<T>(
        &self,
        st: &Statement,
        map: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let sql = dialect::postgres(&st.sql);
        let params = pg_params(&st.params);
        self.read(|c| c.query_opt(&sql, &params))?
            .as_ref()
            .map(|r| map(r))
            .transpose()
    }

    /// Every row `st` reads, mapped by `map`.
    fn all<T>(
        &self,
        st: &Statement,
        map: impl Fn(&dyn Cells) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = dialect::postgres(&st.sql);
        let params = pg_params(&st.params);
        self.read(|c| c.query(&sql, &params))?
            .iter()
            .map(|r| map(r))
            .collect()
    }

    /// A connection known to be alive, for a write (which is never retried: it may have
    /// committed before the connection was lost).
    fn live(&self) -> Result<Client, StoreError> {
        while let Some(mut client) = self.take() {
            if client.is_valid(Duration::from_secs(2)).is_ok() {
                return Ok(client);
            }
        }
        self.connect()
    }

    /// Runs `write` and inserts `change` in one transaction, in the order of the write lock.
    fn write_with_change(
        &self,
        change: &ChangeDraft,
        write: impl FnOnce(&mut Transaction<'_>) -> Result<u64, StoreError>,
    ) -> Result<(), StoreError> {
        let mut client = self.live()?;
        let out = (|| {
            let mut tx = client.transaction().map_err(|e| classify(&e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                .map_err(|e| classify(&e))?;
            if write(&mut tx)? == 0 {
                return Err(StoreError::Stale);
            }
            insert_change(&mut tx, change).map_err(|e| classify(&e))?;
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .map_err(|e| classify(&e))?;
            tx.commit().map_err(|e| committing(&e))
        })();
        self.put_back(client);
        out
    }

    /// One statement outside the change log, on a live connection.
    fn exec_shared(&self, st: &Statement) -> Result<(), StoreError> {
        let mut client = self.live()?;
        let out = client
            .execute(&dialect::postgres(&st.sql), &pg_params(&st.params))
            .map(drop)
            .map_err(|e| classify(&e));
        self.put_back(client);
        out
    }

    /// Seals alert-channel secrets as [`SqliteStore::seal_secrets_with`] does, in one
    /// transaction. Every gateway on this database needs the same key.
    pub(crate) fn seal_secrets_with(&mut self, key: &super::KeySource) -> Result<(), String> {
        let mut client = self.live().map_err(|e| e.to_string())?;
        let mut tx = client.transaction().map_err(|e| error_text(&e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(|e| error_text(&e))?;
        let rows: Vec<(String, String)> = tx
            .query("SELECT id, body FROM alert_channels", &[])
            .map_err(|e| error_text(&e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let plan = super::channel_body::plan_sealing(rows, key)?;
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('secrets_key_id', $1) ON CONFLICT (key) DO NOTHING",
            &[&plan.key_id()],
        )
        .map_err(|e| error_text(&e))?;
        let agreed: String = tx
            .query_one(
                "SELECT value FROM settings WHERE key = 'secrets_key_id'",
                &[],
            )
            .map_err(|e| error_text(&e))?
            .get(0);
        if agreed != plan.key_id() {
            if plan.moved_from() != Some(agreed.as_str()) {
                return Err(format!(
                    "this gateway's secrets key is {}, but the gateways sharing {} seal alert-channel secrets with key {agreed}; give every gateway the same key (SECRETS_KEY, SECRETS_KEY_FILE or SECRETS_KEY_URI)",
                    plan.key_id(),
                    self.shown
                ));
            }
            tx.execute(
                "UPDATE settings SET value = $1 WHERE key = 'secrets_key_id'",
                &[&plan.key_id()],
            )
            .map_err(|e| error_text(&e))?;
        }
        for (id, body) in &plan.updates {
            tx.execute(
                "UPDATE alert_channels SET body = $2 WHERE id = $1",
                &[id, body],
            )
            .map_err(|e| error_text(&e))?;
        }
        tx.commit().map_err(|e| error_text(&e))?;
        self.put_back(client);
        self.secrets = Some(plan.report(&key.file));
        Ok(())
    }

    /// A connection of its own that listens for change notifications.
    pub(crate) fn listener(&self) -> Result<ChangeListener, StoreError> {
        let mut client = self.connect()?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| classify(&e))?;
        Ok(ChangeListener { client })
    }
}

/// An origin's row of the central audit index.
#[derive(Debug, Clone)]
pub(crate) struct OriginRow {
    pub(crate) origin: String,
    /// `[{vkey, firstSize, retiredSize?}]`, as the origin's `/admin/audit/keys` lists them.
    pub(crate) keys: String,
    /// Entries copied (seq 1 to `size`).
    pub(crate) size: u64,
    /// The latest signed checkpoint copied, `(size, note)`.
    pub(crate) checkpoint: Option<(u64, String)>,
    pub(crate) updated_at: String,
}

/// Audit rows turned into columns, for one `INSERT ... SELECT FROM unnest(...)` per batch.
#[derive(Default)]
struct Columns<'a> {
    seq: Vec<i64>,
    source: Vec<&'a str>,
    timestamp: Vec<&'a str>,
    agent_id: Vec<Option<&'a str>>,
    agent_name: Vec<Option<String>>,
    action: Vec<&'a str>,
    decision: Vec<&'a str>,
    trace_id: Vec<Option<String>>,
    body: Vec<&'a str>,
}

/// Filters of the central audit index, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct CentralQuery {
    pub(crate) limit: usize,
    pub(crate) origin: Option<String>,
    pub(crate) agent: Option<String>,
    pub(crate) decision: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
}

impl PgStore {
    /// How many of `origin`'s entries the central index holds.
    pub(crate) fn audit_shipped(&self, origin: &str) -> Result<u64, StoreError> {
        Ok(self
            .read(|c| {
                c.query_opt(
                    "SELECT size FROM audit_origins WHERE origin = $1",
                    &[&origin],
                )
            })?
            .map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    /// Copies `rows` (the next entries of `origin`'s log, in order) into the central index with
    /// the origin's keys and a signed checkpoint no larger than what is then copied, in one
    /// transaction. Rows already there (a copy retried after a lost answer) are kept as they are.
    pub(crate) fn ship_audit(
        &self,
        origin: &str,
        keys: &str,
        rows: &[crate::audit::IndexedEntry],
        checkpoint: Option<&(u64, String)>,
    ) -> Result<(), StoreError> {
        let mut client = self.live()?;
        let out = (|| {
            let mut tx = client.transaction()?;
            let mut c = Columns::default();
            for r in rows {
                let parsed: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                let text = |k: &str| parsed.get(k).and_then(Value::as_str).map(str::to_owned);
                c.seq.push(r.seq as i64);
                c.source.push(&r.source);
                c.timestamp.push(&r.timestamp);
                c.agent_id.push(r.agent_id.as_deref());
                c.agent_name.push(text("agentName"));
                c.action.push(&r.action);
                c.decision.push(&r.decision);
                c.trace_id.push(text("traceId"));
                c.body.push(&r.body);
            }
            tx.execute(
                "INSERT INTO audit_index (origin, seq, source, timestamp, agent_id, agent_name, action, decision, trace_id, body)
                 SELECT $1, * FROM unnest($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])
                 ON CONFLICT (origin, seq) DO NOTHING",
                &[
                    &origin,
                    &c.seq,
                    &c.source,
                    &c.timestamp,
                    &c.agent_id,
                    &c.agent_name,
                    &c.action,
                    &c.decision,
                    &c.trace_id,
                    &c.body,
                ],
            )?;
            let size = rows.last().map(|r| r.seq as i64);
            let (cp_size, cp_note) = match checkpoint {
                Some((s, n)) => (Some(*s as i64), Some(n.as_str())),
                None => (None, None),
            };
            tx.execute(
                "INSERT INTO audit_origins (origin, keys, size, checkpoint_size, checkpoint, updated_at)
                 VALUES ($1, $2, COALESCE($3::BIGINT, 0), $4::BIGINT, $5::TEXT, $6)
                 ON CONFLICT (origin) DO UPDATE SET
                   keys = excluded.keys,
                   size = GREATEST(audit_origins.size, excluded.size),
                   checkpoint_size = COALESCE(excluded.checkpoint_size, audit_origins.checkpoint_size),
                   checkpoint = COALESCE(excluded.checkpoint, audit_origins.checkpoint),
                   updated_at = excluded.updated_at",
                &[&origin, &keys, &size, &cp_size, &cp_note, &crate::clock::now_rfc3339()],
            )?;
            tx.commit()
        })()
        .map_err(|e| classify(&e));
        self.put_back(client);
        out
    }

    /// Claims `origin` for the log with `keys` (JSON of its key ranges), under the write lock so
    /// two gateways starting at once cannot both find it free: the first claim writes its keys,
    /// and every claim returns the keys the origin is held under (to compare with its own).
    pub(crate) fn claim_audit_origin(
        &self,
        origin: &str,
        keys: &str,
    ) -> Result<String, StoreError> {
        let mut client = self.live()?;
        let out = (|| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            tx.execute(
                "INSERT INTO audit_origins (origin, keys, size, checkpoint_size, checkpoint, updated_at)
                 VALUES ($1, $2, 0, NULL, NULL, $3)
                 ON CONFLICT (origin) DO NOTHING",
                &[&origin, &keys, &crate::clock::now_rfc3339()],
            )?;
            let held: String = tx
                .query_one("SELECT keys FROM audit_origins WHERE origin = $1", &[&origin])?
                .get(0);
            tx.commit()?;
            Ok(held)
        })()
        .map_err(|e: postgres::Error| classify(&e));
        self.put_back(client);
        out
    }

    /// Whether the central index holds any entry of `origin`.
    pub(crate) fn audit_index_holds(&self, origin: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_one(
                "SELECT EXISTS (SELECT 1 FROM audit_index WHERE origin = $1)",
                &[&origin],
            )
        })
        .map(|r| r.get(0))
    }

    /// Every origin the central index holds.
    pub(crate) fn audit_origins(&self) -> Result<Vec<OriginRow>, StoreError> {
        Ok(self
            .read(|c| {
                c.query(
                    "SELECT origin, keys, size, checkpoint_size, checkpoint, updated_at FROM audit_origins ORDER BY origin",
                    &[],
                )
            })?
            .iter()
            .map(|r| OriginRow {
                origin: r.get(0),
                keys: r.get(1),
                size: r.get::<_, i64>(2) as u64,
                checkpoint: r
                    .get::<_, Option<i64>>(3)
                    .zip(r.get::<_, Option<String>>(4))
                    .map(|(s, n)| (s as u64, n)),
                updated_at: r.get(5),
            })
            .collect())
    }

    /// `origin`'s entries with `after < seq <= upto`, oldest first: `(seq, body)`.
    pub(crate) fn audit_bodies(
        &self,
        origin: &str,
        after: u64,
        upto: u64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let (after, upto) = (after as i64, upto as i64);
        Ok(self
            .read(|c| {
                c.query(
                    "SELECT seq, body FROM audit_index WHERE origin = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
                    &[&origin, &after, &upto],
                )
            })?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    /// Entries of every origin matching `q`, newest first: `(origin, seq, body)`.
    pub(crate) fn central_audit(
        &self,
        q: &CentralQuery,
    ) -> Result<Vec<(String, u64, String)>, StoreError> {
        let limit = q.limit as i64;
        Ok(self
            .read(|c| {
                c.query(
                    "SELECT origin, seq, body FROM audit_index
                     WHERE ($1::TEXT IS NULL OR origin = $1)
                       AND ($2::TEXT IS NULL OR agent_id = $2 OR agent_name = $2)
                       AND ($3::TEXT IS NULL OR decision = $3)
                       AND ($4::TEXT IS NULL OR timestamp >= $4)
                       AND ($5::TEXT IS NULL OR timestamp <= $5)
                     ORDER BY timestamp DESC, origin, seq DESC LIMIT $6",
                    &[&q.origin, &q.agent, &q.decision, &q.from, &q.to, &limit],
                )
            })?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
            .collect())
    }
}

/// Wakes a follower when another gateway commits a change.
pub(crate) struct ChangeListener {
    client: Client,
}

impl ChangeListener {
    /// Waits up to `timeout` for a notification; true when one came. Notifications that came
    /// together are taken at once. An error means the connection is gone: make a new listener.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        let first = self.client.notifications().timeout_iter(timeout).next();
        match first {
            Ok(None) => {
                if self.client.is_closed() {
                    return Err(StoreError::Unavailable(
                        "the listening connection closed".into(),
                    ));
                }
                Ok(false)
            }
            Err(e) => Err(classify(&e)),
            Ok(Some(_)) => {
                let mut notes = self.client.notifications();
                let mut rest = notes.iter();
                while let Ok(Some(_)) = rest.next() {}
                drop(rest);
                Ok(true)
            }
        }
    }
}

/// Applies the migrations this gateway knows, under a session advisory lock so gateways that
/// start together apply each one once. A database newer than this gateway is refused.
fn migrate(client: &mut Client, shown: &str) -> Result<(), String> {
    let fail = |e: postgres::Error| {
        format!(
            "cannot apply the control-plane schema to {shown}: {}",
            error_text(&e)
        )
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&WRITE_LOCK])
        .map_err(fail)?;
    let out = (|| {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )?;
        let current: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )?
            .get(0);
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&(index as i32 + 1), &crate::clock::now_rfc3339()],
            )?;
            tx.commit()?;
        }
        if current as usize <= MIGRATIONS.len() {
            license::create_installation_id(client)?;
        }
        Ok(current)
    })();
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&WRITE_LOCK])
        .map_err(fail)?;
    let current = out.map_err(fail)?;
    if current as usize > MIGRATIONS.len() {
        return Err(format!(
            "the control-plane database {shown} has schema version {current}, newer than this gateway knows ({}); run a newer gateway",
            MIGRATIONS.len()
        ));
    }
    Ok(())
}

/// The server's own message for a database error (with its SQLSTATE), or the client's.
fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The client's error, with its causes (a TLS handshake says why it failed).
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let more = c.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                cause = c.source();
            }
            text
        }
    }
}

/// True when the connection is gone (closed, reset, or the server shutting down).
fn lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; 57P01-57P03: shutdown, crash, cannot connect now.
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        // No SQLSTATE: an I/O error on the socket.
        None => true,
    }
}

/// An error of the COMMIT itself: the server may have committed before the connection went, so
/// a lost connection here is an unknown outcome, never "nothing was done".
fn committing(e: &postgres::Error) -> StoreError {
    match e.code() {
        Some(_) if !lost(e) => StoreError::Backend(error_text(e)),
        _ => StoreError::OutcomeUnknown(error_text(e)),
    }
}

fn classify(e: &postgres::Error) -> StoreError {
    if lost(e) {
        StoreError::Unavailable(error_text(e))
    } else {
        StoreError::Backend(error_text(e))
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(Param::pg).collect()
}

/// Runs one shared statement in `tx`: the rows it changed.
fn exec(tx: &mut Transaction<'_>, st: &Statement) -> Result<u64, postgres::Error> {
    tx.execute(&dialect::postgres(&st.sql), &pg_params(&st.params))
}

fn insert_change(tx: &mut Transaction<'_>, c: &ChangeDraft) -> Result<(), postgres::Error> {
    // The change this one replaces on the same object, read under the write lock.
    let previous = tables::previous_change(c);
    let rollback_ref: Option<String> = tx
        .query_opt(
            &dialect::postgres(&previous.sql),
            &pg_params(&previous.params),
        )?
        .map(|r| r.get(0));
    exec(tx, &tables::insert_change(c, rollback_ref))?;
    Ok(())
}

impl Store for PgStore {
    fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.one(&tables::get_agent(id), tables::agent_from_row)
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.all(&tables::list_agents(), tables::agent_from_row)
    }

    fn save_agent(
        &self,
        a: &AgentRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let st = tables::save_agent(a, write)?;
        self.write_with_change(change, |tx| {
            // Counted under the write lock: no other gateway inserts meanwhile.
            if let Write::InsertCapped(max) = write {
                let count = tables::count_active_agents();
                let active: i64 = tx
                    .query_one(&dialect::postgres(&count.sql), &pg_params(&count.params))
                    .map_err(|e| classify(&e))?
                    .get(0);
                if active as u64 >= max {
                    return Err(StoreError::AgentLimit(active as u64));
                }
            }
            exec(tx, &st).map_err(|e| classify(&e))
        })
    }

    fn get_policy(&self, id: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.one(&tables::get_policy(id), tables::policy_from_row)
    }

    fn get_policy_by_name(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        self.one(&tables::get_policy_by_name(name), tables::policy_from_row)
    }

    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.all(&tables::list_policies(), tables::policy_from_row)
    }

    fn save_policy(
        &self,
        p: &PolicyRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let st = tables::save_policy(p, write)?;
        let conflict = |e: postgres::Error| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                tables::policy_name_taken(p)
            } else {
                classify(&e)
            }
        };
        self.write_with_change(change, |tx| exec(tx, &st).map_err(conflict))
    }

    fn get_channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.one(&tables::get_channel(id), |r| {
            tables::channel_from_row(r, self.secrets.as_ref())
        })
    }

    fn list_channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.all(&tables::list_channels(), |r| {
            tables::channel_from_row(r, self.secrets.as_ref())
        })
    }

    fn save_channel(
        &self,
        ch: &ChannelRecord,
        write: Write,
        change: &ChangeDraft,
    ) -> Result<(), StoreError> {
        let body = super::channel_body::encode(ch, self.secrets.as_ref())?;
        let st = tables::save_channel(ch, body, write)?;
        self.write_with_change(change, |tx| exec(tx, &st).map_err(|e| classify(&e)))
    }

    fn list_changes(&self, f: &ChangeFilter) -> Result<Vec<ChangeRecord>, StoreError> {
        self.all(&tables::list_changes(f), tables::change_from_row)
    }

    fn created_with_key(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        self.one(&tables::created_with_key(key), tables::kind_and_object)
    }

    fn mark_deployed(&self, change_id: &str, at: &str) -> Result<(), StoreError> {
        self.exec_shared(&tables::mark_deployed(change_id, at))
    }

    fn save_undelivered(&self, alert: &Value) -> Result<(), StoreError> {
        self.exec_shared(&tables::save_undelivered(alert))
    }

    fn list_undelivered(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        self.all(&tables::list_undelivered(limit), tables::body_from_row)
    }

    fn record_delivery(&self, delivery: &Value) -> Result<(), StoreError> {
        self.exec_shared(&tables::record_delivery(delivery))
    }

    fn list_deliveries(
        &self,
        from: Option<&str>,
        to: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        self.all(
            &tables::list_deliveries(from, to, limit),
            tables::body_from_row,
        )
    }

    fn last_change_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .one(&tables::last_change_seq(), tables::first_int)?
            .unwrap_or(0))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_one("SELECT 1", &[])).map(drop)
    }

    fn get_sidecar(&self, origin: &str) -> Result<Option<SidecarRecord>, StoreError> {
        self.local.get_sidecar(origin)
    }

    fn list_sidecars(&self) -> Result<Vec<SidecarRecord>, StoreError> {
        self.local.list_sidecars()
    }

    fn save_sidecar(&self, rec: &SidecarRecord) -> Result<(), StoreError> {
        self.local.save_sidecar(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_multi_host_url_is_shown_with_every_host_and_no_password() {
        for (url, shown) in [
            (
                "postgresql://u:secret-pw@db1:5433,db2:5434/cp?target_session_attrs=read-write",
                "db1:5433,db2:5434/cp",
            ),
            (
                "postgresql://u:secret-pw@db1,db2/cp",
                "db1:5432,db2:5432/cp",
            ),
            ("postgresql://u:secret-pw@db1:6000/cp", "db1:6000/cp"),
            (
                "host=db1,db2 port=7000 user=u password=secret-pw dbname=cp",
                "db1:7000,db2:7000/cp",
            ),
        ] {
            let config: postgres::Config = url.parse().unwrap();
            let got = describe(&config);
            assert_eq!(got, shown, "{url}");
            assert!(!got.contains("secret-pw"));
        }
    }
}
