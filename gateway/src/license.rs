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
use meshguard_license::site::{Expect, InstallKind, SiteDir};
use meshguard_license::{LicenseError, State, Status, VendorPublicKey};

use crate::alerts::{Alert, Alerts};
use crate::config::Config;
use crate::error::ApiError;

#[derive(Debug)]
pub(crate) struct Licensing {
    key: Option<VendorPublicKey>,
    site: SiteDir,
    expect: Expect,
    status: RwLock<Arc<Status>>,
    /// What was last alerted, so a state is announced once, not at every check.
    alerted: Mutex<(Option<State>, bool, usize)>,
}

impl Licensing {
    /// Reads the vendor key (a configured key that cannot be read stops the start: that is a
    /// configuration error, not a license lapse) and makes the installation id.
    pub(crate) fn open(config: &Config) -> anyhow::Result<Self> {
        let key = config
            .license_pubkey
            .as_deref()
            .map(VendorPublicKey::from_file)
            .transpose()
            .map_err(|e| anyhow::anyhow!("LICENSE_PUBKEY: {e}"))?;
        let site = SiteDir::new(&config.license_dir);
        if key.is_some() {
            let id = site
                .installation_id()
                .map_err(|e| anyhow::anyhow!("LICENSE_DIR: {e}"))?;
            tracing::info!(installation = %id, dir = %config.license_dir.display(), "licensing on");
        }
        let status = Status::bare(
            State::Unconfigured,
            "licensing is off (no LICENSE_PUBKEY)",
            Utc::now(),
        );
        Ok(Self {
            key,
            site,
            expect: Expect {
                mode: config.deployment_mode,
                region: config.region.clone(),
            },
            status: RwLock::new(Arc::new(status)),
            alerted: Mutex::new((None, false, 0)),
        })
    }

    pub(crate) fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn vendor_key_id(&self) -> Option<String> {
        self.key.as_ref().map(VendorPublicKey::key_id)
    }

    /// Checks the installed license now (file reads: call from a blocking thread), stores the
    /// result and alerts on what changed.
    pub(crate) fn refresh(&self, alerts: &Alerts) -> Arc<Status> {
        let Some(key) = &self.key else {
            return self.status();
        };
        let status = Arc::new(self.site.check(key, &self.expect, Utc::now()));
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&status);
        self.announce(&status, alerts);
        status
    }

    fn announce(&self, status: &Status, alerts: &Alerts) {
        let mut last = self.alerted.lock().unwrap_or_else(|p| p.into_inner());
        let rollback = status.clock_rollback.is_some();
        if rollback && !last.1 {
            tracing::error!("{}", status.warnings.last().map_or("", String::as_str));
            alerts.raise(Alert::system(
                "System Clock Set Back",
                status.warnings.last().map_or("", String::as_str),
            ));
        }
        let changed = last.0 != Some(status.state) || last.2 != status.warnings.len();
        if changed {
            let (severity, title) = match status.state {
                State::Unconfigured => (None, ""),
                State::Valid if status.warnings.is_empty() => (None, ""),
                State::Valid => (Some(Severity::Warning), "License Expiring"),
                State::Grace => (Some(Severity::Warning), "License In Grace Period"),
                State::Expired => (
                    Some(Severity::Critical),
                    "License Expired: Admin Writes Frozen",
                ),
                State::NotYetValid => (Some(Severity::Warning), "License Not Yet Valid"),
                State::Missing => (Some(Severity::Critical), "No License Installed"),
                State::Invalid => (Some(Severity::Critical), "License Invalid"),
            };
            match severity {
                Some(severity) => {
                    tracing::warn!(state = status.state.as_str(), "{}", status.message);
                    let text = status
                        .warnings
                        .first()
                        .filter(|_| status.state == State::Valid)
                        .unwrap_or(&status.message);
                    alerts.raise(Alert::system(title, text).with_severity(severity));
                }
                None => tracing::info!(state = status.state.as_str(), "{}", status.message),
            }
        }
        *last = (Some(status.state), rollback, status.warnings.len());
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
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "licensing_off",
                "licensing is off: set LICENSE_PUBKEY to the vendor public key and restart",
            ));
        };
        let mut ids = Identities::default();
        if self.site.identity_path().exists() {
            ids.add_file(&self.site.identity_path()).map_err(refused)?;
        }
        let body = ids.open(body, "the request body").map_err(refused)?;
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

    /// Admin writes are allowed unless the license says otherwise.
    pub(crate) fn check_write(&self) -> Result<(), ApiError> {
        let status = self.status();
        if status.admin_writes_allowed {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "license_required",
            format!(
                "admin writes are frozen: {} Revoking agents and re-issuing their tokens still \
                 work.",
                status.message
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
