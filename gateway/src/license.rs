//! Licensing as the gateway applies it: checked at start and periodically, reported in
//! `/health` and `GET /admin/license`, renewed with `POST /admin/license`.
//!
//! Only two things ever depend on the license: admin writes (frozen when the license is
//! missing, invalid, not yet valid or past its grace period) and the creation of agents beyond
//! `maxAgents`. Decisions, forwarding, audit, revocation and token re-issue never consult it:
//! a lapsed license must not switch governance off.

use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use chrono::Utc;
use meshguard_api::Severity;
use meshguard_license::seal::Identities;
use meshguard_license::site::{Expect, InstallKind, Records, SiteDir};
use meshguard_license::slot::{self, Keying};
use meshguard_license::{LicenseError, State, Status, VendorPublicKey};

use crate::alerts::{Alert, Alerts};
use crate::config::Config;
use crate::error::ApiError;

/// The build's vendor-key slot (`meshguard_license::slot`): the release pipeline stamps the
/// vendor's public key into these bytes of the built binary; a development build leaves them.
static VENDOR_KEY_SLOT: [u8; slot::SLOT_LEN] = slot::EMPTY;

/// What this binary is: read through `black_box`, so the compiler reads the bytes the stamp
/// wrote, never the initializer it knows.
fn build_keying() -> Result<Keying, LicenseError> {
    slot::parse(std::hint::black_box(&VENDOR_KEY_SLOT))
}

#[derive(Debug)]
pub(crate) struct Licensing {
    /// A release build (keyed: licensing always on, with its key) or a development build.
    keying: Keying,
    key: Option<VendorPublicKey>,
    site: SiteDir,
    /// Whether the records live in a database several gateways share (PostgreSQL).
    shared: bool,
    expect: Expect,
    status: RwLock<Arc<Status>>,
    /// What was last alerted, so a state is announced once, not at every check.
    alerted: Mutex<Option<Announced>>,
    /// Where this gateway stands among the installation's serving gateways, on a shared
    /// control plane: `(started before it, serving)`.
    rank: RwLock<Option<(u64, u64)>>,
    /// Why this gateway is beyond the license's `maxGateways`, while it is.
    beyond: RwLock<Option<String>>,
    /// Held while a check runs: checks come from the checker, the follower, the lease and
    /// installs, and an older result must not overwrite a newer one.
    checking: Mutex<()>,
}

/// What an alert announced: a state, how near its end, and whether the clock was set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Announced {
    state: State,
    stage: Option<i64>,
    rollback: bool,
    beyond: bool,
}

/// Days before expiry (and before the grace period ends) at which a warning is raised again.
const NOTICE_DAYS: [i64; 3] = [30, 7, 1];

impl Licensing {
    /// Reads the vendor key: the build's own (a release build), or `LICENSE_PUBKEY` (a
    /// development build). A release build refuses a `LICENSE_PUBKEY` for another key, and a
    /// configured key that cannot be read stops the start: both are configuration errors, not
    /// license lapses. `records` holds the installation when several gateways share it.
    pub(crate) fn open(config: &Config, records: Option<Arc<dyn Records>>) -> anyhow::Result<Self> {
        let keying = build_keying().map_err(|e| anyhow::anyhow!("this gateway binary: {e}"))?;
        let configured = config
            .license_pubkey
            .as_deref()
            .map(VendorPublicKey::from_file)
            .transpose()
            .map_err(|e| anyhow::anyhow!("LICENSE_PUBKEY: {e}"))?;
        let key = choose_key(&keying, configured)?;
        let shared = records.is_some();
        let site = match records {
            Some(r) => SiteDir::with_records(&config.license_dir, r),
            None => SiteDir::new(&config.license_dir),
        };
        match (&keying, &key) {
            (Keying::Release(k), _) => tracing::info!(
                vendor_key = %k.key_id(),
                "release build: licensing is always on, with the vendor key this build carries"
            ),
            (Keying::Development, Some(k)) => tracing::info!(
                vendor_key = %k.key_id(),
                "development build, licensing on (LICENSE_PUBKEY)"
            ),
            (Keying::Development, None) => {
                tracing::warn!(
                    "development build, licensing off (no vendor key built in, no LICENSE_PUBKEY)"
                )
            }
        }
        let local = SiteDir::new(&config.license_dir);
        if shared {
            if let Some(key) = &key {
                adopt_local_installation(&site, &local, key)?;
            }
        } else {
            refuse_if_moved(&local)?;
        }
        if key.is_some() {
            let id = site
                .installation_id()
                .map_err(|e| anyhow::anyhow!("the installation id: {e}"))?;
            tracing::info!(installation = %id, shared, "licensing on");
        }
        // With a key, nothing is open before the first check has read the license.
        let status = match key {
            Some(_) => Status::bare(
                State::Missing,
                "the license has not been checked yet: admin writes wait for the first check",
                Utc::now(),
            ),
            None => Status::bare(
                State::Unconfigured,
                "licensing is off: a development build with no LICENSE_PUBKEY",
                Utc::now(),
            ),
        };
        Ok(Self {
            keying,
            key,
            site,
            shared,
            expect: Expect {
                mode: config.deployment_mode,
                region: config.region.clone(),
            },
            status: RwLock::new(Arc::new(status)),
            alerted: Mutex::new(None),
            rank: RwLock::new(None),
            beyond: RwLock::new(None),
            checking: Mutex::new(()),
        })
    }

    /// Whether licensing is on: a release build, or `LICENSE_PUBKEY` on a development build.
    pub(crate) fn is_on(&self) -> bool {
        self.key.is_some()
    }

    /// What `/admin/info` says of the build and its licensing.
    pub(crate) fn build(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "kind": self.keying.kind(),
            "licensing": if self.key.is_some() { "on" } else { "off" },
        });
        match (&self.keying, &self.key) {
            (Keying::Release(k), _) => v["vendorKeyId"] = k.key_id().into(),
            (Keying::Development, Some(k)) => {
                v["vendorKeyId"] = k.key_id().into();
                v["note"] = "development build, licensing on (LICENSE_PUBKEY)".into();
            }
            (Keying::Development, None) => v["note"] = "development build, licensing off".into(),
        }
        v
    }

    pub(crate) fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn vendor_key_id(&self) -> Option<String> {
        self.key.as_ref().map(VendorPublicKey::key_id)
    }

    /// Checks the installed license now (file or database reads: call from a blocking thread),
    /// stores the result and alerts on what changed. With the shared database unreachable, the
    /// last status stands: an outage is not a license lapse.
    pub(crate) fn refresh(&self, alerts: &Alerts) -> Arc<Status> {
        let Some(key) = &self.key else {
            return self.status();
        };
        let _one_at_a_time = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        if self.shared
            && let Err(e) = self.site.records().get("installation-id")
        {
            // An outage is not a lapse: the last check stands, judged at the time now.
            tracing::warn!(error = %e, "cannot read the license from the control-plane database; the last check stands, judged at the time now");
            let status = Arc::new(judged_now(&self.status(), Utc::now()));
            *self.status.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&status);
            self.announce(&status, alerts);
            return status;
        }
        let mut status = self.site.check(key, &self.expect, Utc::now());
        let rank = *self.rank.read().unwrap_or_else(|p| p.into_inner());
        let beyond = match (status.max_gateways, rank) {
            (Some(_), None) if self.shared => Some(
                "the gateways serving this installation cannot be counted (this gateway's lease \
                 in the control-plane database could not be renewed), so the license's \
                 maxGateways cannot be checked: admin writes through this gateway wait until it \
                 can"
                .to_owned(),
            ),
            (max, Some((before, live))) => beyond_reason(max, before, live),
            _ => None,
        };
        self.beyond
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clone_from(&beyond);
        if let Some(reason) = beyond
            && status.admin_writes_allowed
        {
            status.admin_writes_allowed = false;
            status.message = reason.clone();
            status.warnings.push(reason);
        }
        let status = Arc::new(status);
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&status);
        self.announce(&status, alerts);
        status
    }

    /// Records where this gateway stands among those serving the installation (its lease's
    /// answer); checks the license again when that changes whether it is beyond `maxGateways`.
    /// `None` when the lease could not be renewed: the gateways cannot be counted.
    pub(crate) fn set_rank(&self, rank: Option<(u64, u64)>, alerts: &Alerts) {
        *self.rank.write().unwrap_or_else(|p| p.into_inner()) = rank;
        let was = self
            .beyond
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let max = self.status().max_gateways;
        let is = match rank {
            Some((before, live)) => beyond_reason(max, before, live).is_some(),
            None => max.is_some(),
        };
        if was != is {
            self.refresh(alerts);
        }
    }

    fn announce(&self, status: &Status, alerts: &Alerts) {
        let now = Announced {
            state: status.state,
            stage: notice_stage(status),
            rollback: status.clock_rollback.is_some(),
            beyond: self
                .beyond
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .is_some(),
        };
        let mut last = self.alerted.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.replace(now);
        if now.rollback && !before.is_some_and(|b| b.rollback) {
            let text = status.warnings.last().map_or("", String::as_str);
            tracing::error!("{text}");
            alerts.raise(Alert::system("System Clock Set Back", text));
        }
        if now.beyond && !before.is_some_and(|b| b.beyond) {
            tracing::error!("{}", status.message);
            alerts.raise(
                Alert::system("License Gateway Limit Reached", &status.message)
                    .with_severity(Severity::Critical),
            );
        }
        if before.is_some_and(|b| b.state == now.state && b.stage == now.stage) {
            return;
        }
        let Some((severity, title)) = alert_of(status.state, now.stage) else {
            tracing::info!(state = status.state.as_str(), "{}", status.message);
            return;
        };
        tracing::warn!(state = status.state.as_str(), "{}", status.message);
        let text = status
            .warnings
            .first()
            .filter(|_| status.state == State::Valid)
            .unwrap_or(&status.message);
        alerts.raise(Alert::system(title, text).with_severity(severity));
    }

    /// `/metrics` lines: the license state, whether admin writes are open, and the seconds
    /// left until expiry and until the grace period ends (negative once past).
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use crate::metrics::gauge;
        let s = self.status();
        let state = format!("{{state=\"{}\"}} 1", s.state.as_str());
        gauge(
            out,
            "meshguard_license_state",
            "The license state (1 for the current one).",
            &state,
        );
        gauge(
            out,
            "meshguard_license_admin_writes_allowed",
            "1 when admin writes are open.",
            &format!(" {}", u8::from(s.admin_writes_allowed)),
        );
        // Seconds from now, not from the last check (which may be an hour old).
        let now = Utc::now();
        for (name, help, at) in [
            (
                "meshguard_license_expiry_seconds",
                "Seconds until the license expires.",
                s.expires_at,
            ),
            (
                "meshguard_license_grace_end_seconds",
                "Seconds until the license's grace period ends.",
                s.grace_ends_at,
            ),
        ] {
            if let Some(at) = at {
                gauge(out, name, help, &format!(" {}", (at - now).num_seconds()));
            }
        }
    }

    /// Installs a license from an admin request body: a license envelope, or
    /// `{"license": envelope, "activation": envelope}`, either possibly age-encrypted to the
    /// site key. Blocking (file I/O).
    pub(crate) fn install(
        &self,
        body: Vec<u8>,
        alerts: &Alerts,
    ) -> Result<(InstallKind, Arc<Status>), ApiError> {
        let Some(key) = &self.key else {
            return Err(licensing_off());
        };
        let body = self.open_body(body)?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not a license: {e}; send the license file as is, or \
                 {{\"license\": <license>, \"activation\": <activation>}}"
            ))
        })?;
        let (license, activation) = match value.get("license") {
            Some(l) => (l.clone(), value.get("activation").cloned()),
            None => (value, None),
        };
        let license = serde_json::to_vec(&license).map_err(ApiError::internal)?;
        let activation = activation
            .map(|a| serde_json::to_vec(&a))
            .transpose()
            .map_err(ApiError::internal)?;
        let (installed, kind) = self
            .site
            .install(
                key,
                &license,
                activation.as_deref(),
                &self.expect,
                Utc::now(),
            )
            .map_err(refused)?;
        let l = &installed.license.license;
        tracing::info!(license = %l.id, sequence = l.sequence, kind = ?kind, "license installed");
        Ok((kind, self.refresh(alerts)))
    }

    /// Makes the installation's activation request for the license in `body` (an envelope,
    /// possibly age-encrypted to the site). Blocking.
    pub(crate) fn request(&self, body: Vec<u8>) -> Result<serde_json::Value, ApiError> {
        let Some(key) = &self.key else {
            return Err(licensing_off());
        };
        let body = self.open_body(body)?;
        let license =
            meshguard_license::SignedLicense::verify(&body, key, "the license").map_err(refused)?;
        let request = self
            .site
            .create_request(
                &license,
                &self.expect,
                env!("CARGO_PKG_VERSION"),
                Utc::now(),
            )
            .map_err(refused)?;
        tracing::info!(license = %license.license.id, installation = %request.installation_id, "activation request made");
        serde_json::to_value(&request).map_err(ApiError::internal)
    }

    /// The body as sent, or opened with the site's age identity when it is encrypted.
    fn open_body(&self, body: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let mut ids = Identities::default();
        if self.site.identity_path().exists() {
            ids.add_file(&self.site.identity_path()).map_err(refused)?;
        }
        ids.open(body, "the request body").map_err(refused)
    }

    /// Admin writes are allowed unless the license says otherwise: then 402, with the steps
    /// that open them again.
    pub(crate) fn check_write(&self) -> Result<(), ApiError> {
        // Judged at the time now: a check that has not run since the grace period ended (a
        // long LICENSE_CHECK_SECONDS, a database that cannot be read) does not keep writes open.
        let status = judged_now(&self.status(), Utc::now());
        if status.admin_writes_allowed {
            return Ok(());
        }
        let beyond = self
            .beyond
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let steps = steps_for(status.state, beyond);
        Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "license_required",
            format!(
                "admin writes are frozen: {}. {steps} Decisions, audit, revoking agents and \
                 re-issuing their tokens go on.",
                status.message.trim_end_matches('.')
            ),
        ))
    }

    /// The refusal of a new agent when `active` agents already fill the license's `max` (the
    /// store counted them in the insert's transaction: `Write::InsertCapped`).
    pub(crate) fn agent_limit(&self, max: u64, active: u64) -> ApiError {
        let status = self.status();
        ApiError::new(
            StatusCode::FORBIDDEN,
            "license_limit",
            format!(
                "license {} allows {max} active agents and {active} exist: no more can be created \
                 (existing agents keep working); revoke an agent or install a license with a \
                 higher maxAgents",
                status.license_id.as_deref().unwrap_or("")
            ),
        )
    }

    /// The license's `maxAgents`, when it sets one.
    pub(crate) fn max_agents(&self) -> Option<u64> {
        self.status().max_agents
    }
}

/// The record a license directory keeps once its installation moved to PostgreSQL.
const MOVED: &str = "moved-to-postgresql.json";

/// Moving a site from SQLite to PostgreSQL: the first start on the database carries this
/// gateway's own activated installation (its id, license, activation and the later clock mark)
/// into the database, when the database's installation has neither a license nor an activation
/// under way, so no new activation round trip is needed. The directory then records the move and
/// keeps its license aside, so a SQLite gateway started with it refuses. (Offline licensing
/// cannot stop a site copying its own files back; the move is in the gateway's log.)
fn adopt_local_installation(
    shared: &SiteDir,
    local: &SiteDir,
    key: &VendorPublicKey,
) -> anyhow::Result<()> {
    let db =
        |e: LicenseError| anyhow::anyhow!("the installation in the control-plane database: {e}");
    let here = |e: LicenseError| anyhow::anyhow!("{e}");
    // A database whose installation has a license, or an activation under way, is left alone.
    for name in ["installed.json", "request.json"] {
        if shared.records().get(name).map_err(db)?.is_some() {
            return Ok(());
        }
    }
    let Ok(Some(installed)) = local.installed(key) else {
        return Ok(());
    };
    let records = local.records();
    let id = local.installation_id().map_err(here)?;
    let bytes = records
        .get("installed.json")
        .map_err(here)?
        .unwrap_or_default();
    // The later of the two clock marks: the move never sets the mark back.
    let later = shared
        .last_seen()
        .map_err(db)?
        .max(local.last_seen().map_err(here)?);
    if let Some(later) = later {
        shared.observe_clock(later).map_err(db)?;
    }
    shared
        .records()
        .put("installation-id", format!("{id}\n").as_bytes())
        .map_err(db)?;
    shared.records().put("installed.json", &bytes).map_err(db)?;
    let moved = serde_json::json!({
        "installationId": id,
        "licenseId": installed.license.license.id,
        "movedAt": crate::clock::now_rfc3339(),
    });
    records
        .put(MOVED, &serde_json::to_vec_pretty(&moved)?)
        .map_err(here)?;
    records.put("installed.json.moved", &bytes).map_err(here)?;
    records.remove("installed.json").map_err(here)?;
    tracing::warn!(installation = %id, license = %installed.license.license.id, "this gateway's installation and its activation moved into the control-plane database: every gateway on it now shares them");
    Ok(())
}

/// The reverse move is refused: an installation on PostgreSQL is every gateway's on it, and a
/// copy of its activation in one SQLite gateway would make two installations of one.
fn refuse_if_moved(local: &SiteDir) -> anyhow::Result<()> {
    let Ok(Some(moved)) = local.records().get(MOVED) else {
        return Ok(());
    };
    let moved: serde_json::Value = serde_json::from_slice(&moved).unwrap_or_default();
    anyhow::bail!(
        "the installation {} in {} moved to a PostgreSQL control plane on {}: its license and \
         activation live there, shared by every gateway on it, and are not moved back; run this \
         gateway with DATABASE_URL, or give it another LICENSE_DIR to start a new installation \
         (which needs its own activation)",
        moved["installationId"].as_str().unwrap_or("?"),
        local.path().display(),
        moved["movedAt"].as_str().unwrap_or("?")
    )
}

/// Why a gateway with `before` serving gateways ahead of it is beyond `max`, if it is.
fn beyond_reason(max: Option<u64>, before: u64, live: u64) -> Option<String> {
    let max = max?;
    (before >= max).then(|| {
        format!(
            "this gateway is number {} of {live} serving this installation and the license \
             allows {max} (maxGateways): it enforces and audits, but admin writes through it \
             are refused until a gateway stops or a license with a higher maxGateways is \
             installed",
            before + 1
        )
    })
}

/// What opens admin writes again, for the 402's message.
fn steps_for(state: State, beyond: bool) -> &'static str {
    match state {
        State::Valid | State::Grace if beyond => {
            "Stop a gateway, or install a license with a higher maxGateways (POST /admin/license)."
        }
        State::Missing => {
            "To activate: POST /admin/license/request with the license file (or \
             `meshguard-license request`), take the request to the vendor (`meshguard-license \
             activate`), then POST /admin/license {\"license\": <license>, \"activation\": \
             <activation>}."
        }
        State::Expired | State::Grace => {
            "Install a renewal from the vendor with POST /admin/license (no new activation is \
             needed for a renewal of the installed license)."
        }
        State::NotYetValid => "Wait until the license's start, or install one valid now.",
        State::Invalid | State::Valid | State::Unconfigured => {
            "Fix what the message names (the license must fit this site's mode and region and \
             verify with the vendor's key), or install a license that does, with \
             POST /admin/license."
        }
    }
}

/// `status` judged at `now` by the times it carries: past the grace period its writes freeze,
/// whatever the last check found.
fn judged_now(status: &Status, now: chrono::DateTime<Utc>) -> Status {
    let mut s = status.clone();
    if let Some(end) = s.grace_ends_at
        && now > end
        && s.admin_writes_allowed
    {
        s.state = State::Expired;
        s.admin_writes_allowed = false;
        s.message = format!(
            "license {} ended with its grace period on {}: admin writes are frozen (enforcement \
             and audit continue)",
            s.license_id.as_deref().unwrap_or("?"),
            s.grace_ends.as_deref().unwrap_or("?")
        );
    }
    s
}

/// A release build licenses with its own key only; a development build with `LICENSE_PUBKEY`,
/// if set.
fn choose_key(
    keying: &Keying,
    configured: Option<VendorPublicKey>,
) -> anyhow::Result<Option<VendorPublicKey>> {
    match (keying, configured) {
        (Keying::Release(built), Some(given)) if given != *built => anyhow::bail!(
            "LICENSE_PUBKEY is vendor key {}, but this release build carries vendor key {}: a \
             release build licenses only with the key it was built with; remove LICENSE_PUBKEY \
             or set it to the vendor's key",
            given.key_id(),
            built.key_id()
        ),
        (Keying::Release(built), _) => Ok(Some(built.clone())),
        (Keying::Development, given) => Ok(given),
    }
}

/// Which warning stage a status is in: the smallest of [`NOTICE_DAYS`] not below the days
/// left until expiry (valid) or until the grace period ends (grace).
fn notice_stage(s: &Status) -> Option<i64> {
    let end = match s.state {
        State::Valid => s.expires_at?,
        State::Grace => s.grace_ends_at?,
        _ => return None,
    };
    let left = (end - s.checked_at).num_seconds();
    NOTICE_DAYS
        .iter()
        .rev()
        .find(|d| left <= **d * 86_400)
        .copied()
}

/// The alert a state (and stage) raises, if any.
fn alert_of(state: State, stage: Option<i64>) -> Option<(Severity, &'static str)> {
    Some(match state {
        State::Unconfigured => return None,
        State::Valid if stage.is_none() => return None,
        State::Valid => (Severity::Warning, "License Expiring"),
        State::Grace if stage == Some(1) => (Severity::Critical, "License Grace Period Ending"),
        State::Grace => (Severity::Warning, "License In Grace Period"),
        State::Expired => (Severity::Critical, "License Expired: Admin Writes Frozen"),
        State::NotYetValid => (Severity::Warning, "License Not Yet Valid"),
        State::Missing => (Severity::Critical, "No License Installed"),
        State::Invalid => (Severity::Critical, "License Invalid"),
    })
}

fn licensing_off() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "licensing_off",
        "licensing is off (a development build): set LICENSE_PUBKEY to the vendor public key \
         and restart, or run a release build",
    )
}

fn refused(e: LicenseError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

/// Re-checks the license every `config.license_check_interval`.
pub(crate) fn spawn_checker(state: crate::state::AppState) {
    let every = state.config.license_check_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                s.license.refresh(&s.alerts);
            })
            .await;
        }
    });
}

/// The installation's records in the shared PostgreSQL control plane. Installing a license
/// writes a change record, so every gateway following the control plane checks it again.
#[derive(Debug)]
pub(crate) struct SharedRecords(pub(crate) Arc<crate::store::PgStore>);

impl Records for SharedRecords {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, LicenseError> {
        self.0
            .license_record(name)
            .map_err(|e| unavailable(name, &e))
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), LicenseError> {
        let change = (name == "installed.json").then(license_change);
        self.0
            .put_license_record(name, bytes, change.as_ref())
            .map_err(|e| unavailable(name, &e))
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, LicenseError> {
        self.0
            .create_license_record(name, bytes)
            .map_err(|e| unavailable(name, &e))
    }

    fn remove(&self, name: &str) -> Result<(), LicenseError> {
        self.0
            .remove_license_record(name)
            .map_err(|e| unavailable(name, &e))
    }

    fn locate(&self, name: &str) -> String {
        format!("the license record {name} in the control-plane database")
    }
}

fn unavailable(name: &str, e: &crate::store::StoreError) -> LicenseError {
    LicenseError::Invalid(format!(
        "cannot reach the license record {name} in the control-plane database: {e}; try again \
         once the database answers"
    ))
}

/// The change record of a license install (what it installs is in the license record).
fn license_change() -> crate::store::ChangeDraft {
    crate::store::ChangeDraft {
        id: crate::ids::new_id("chg"),
        timestamp: crate::clock::now_rfc3339(),
        kind: "license",
        object_id: "installed".into(),
        object_name: None,
        operation: "install",
        fields: Vec::new(),
        before: None,
        after: None,
        old_digest: None,
        new_digest: None,
        approver: None,
        change_ticket: None,
        trace_id: None,
        idempotency_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: State, days_left: f64) -> Status {
        let now = Utc::now();
        let end = now + chrono::Duration::seconds((days_left * 86_400.0) as i64);
        let mut s = Status::bare(state, "", now);
        s.expires_at = Some(end);
        s.grace_ends_at = Some(end);
        s
    }

    #[test]
    fn warnings_come_at_30_7_and_1_days_before_expiry_and_before_grace_ends() {
        let table = [
            (State::Valid, 45.0, None),
            (State::Valid, 30.0, Some(30)),
            (State::Valid, 8.0, Some(30)),
            (State::Valid, 7.0, Some(7)),
            (State::Valid, 2.0, Some(7)),
            (State::Valid, 1.0, Some(1)),
            (State::Valid, 0.2, Some(1)),
            (State::Grace, 29.0, Some(30)),
            (State::Grace, 6.0, Some(7)),
            (State::Grace, 0.5, Some(1)),
            (State::Expired, 0.5, None),
            (State::Missing, 3.0, None),
        ];
        for (state, left, stage) in table {
            assert_eq!(
                notice_stage(&at(state, left)),
                stage,
                "{state:?} {left} days"
            );
        }
        // Each stage is its own alert; a valid license far from expiry raises none.
        assert_eq!(alert_of(State::Valid, None), None);
        assert_eq!(
            alert_of(State::Valid, Some(7)).map(|a| a.1),
            Some("License Expiring")
        );
        assert_eq!(
            alert_of(State::Grace, Some(1)).map(|a| a.0),
            Some(Severity::Critical)
        );
    }

    #[test]
    fn beyond_max_gateways_is_the_gateways_started_after_the_first_max() {
        assert_eq!(beyond_reason(None, 5, 6), None);
        assert_eq!(beyond_reason(Some(2), 1, 3), None);
        let why = beyond_reason(Some(2), 2, 3).unwrap();
        assert!(
            why.contains("number 3 of 3") && why.contains("allows 2"),
            "{why}"
        );
    }
}

#[cfg(test)]
mod judged {
    use super::*;

    #[test]
    fn a_status_past_its_grace_period_freezes_writes_whatever_the_last_check_said() {
        let now = Utc::now();
        let mut s = Status::bare(State::Valid, "valid", now - chrono::Duration::days(40));
        s.admin_writes_allowed = true;
        s.license_id = Some("lic_1".into());
        s.grace_ends_at = Some(now - chrono::Duration::days(1));
        let judged = judged_now(&s, now);
        assert_eq!(
            (judged.state, judged.admin_writes_allowed),
            (State::Expired, false)
        );
        s.grace_ends_at = Some(now + chrono::Duration::days(1));
        assert!(judged_now(&s, now).admin_writes_allowed);
        assert!(steps_for(State::Missing, false).contains("/admin/license/request"));
        assert!(steps_for(State::Expired, true).contains("renewal"));
        assert!(steps_for(State::Valid, true).contains("maxGateways"));
    }
}
