//! What a verified license means at a given time.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::document::{DeploymentMode, SignedLicense, timestamp};

/// Warn this many days before expiry.
pub const WARN_DAYS: i64 = 30;

/// The license state, from the gateway's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No vendor key configured: licensing is off (evaluation and development).
    Unconfigured,
    /// A vendor key is configured but no license is installed.
    Missing,
    /// The installed files fail verification or do not fit this installation.
    Invalid,
    NotYetValid,
    Valid,
    /// Past `expires` but within the grace period: everything works, with warnings.
    Grace,
    /// Past the grace period: admin writes are frozen.
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfigured => "unconfigured",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::NotYetValid => "not_yet_valid",
            Self::Valid => "valid",
            Self::Grace => "grace",
            Self::Expired => "expired",
        }
    }
}

/// The clock read earlier than a time already seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockRollback {
    #[serde(with = "timestamp")]
    pub last_seen: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub now: DateTime<Utc>,
}

/// License status as reported by `status`, `/health` and `GET /admin/license`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: State,
    /// One sentence for people: what holds and what to do.
    pub message: String,
    /// Whether creating and changing agents, policies and channels is allowed. Enforcement,
    /// audit, revocation and token re-issue never depend on it.
    pub admin_writes_allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_mode: Option<DeploymentMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_ends: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gateways: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_rollback: Option<ClockRollback>,
    #[serde(with = "timestamp")]
    pub checked_at: DateTime<Utc>,
    /// `expires` and the end of the grace period as times, for the gateway's warnings and
    /// metrics (the strings above are what people read).
    #[serde(skip)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub grace_ends_at: Option<DateTime<Utc>>,
}

impl Status {
    /// A status with no license facts.
    pub fn bare(state: State, message: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            admin_writes_allowed: matches!(state, State::Unconfigured),
            state,
            message: message.into(),
            license_id: None,
            customer: None,
            edition: None,
            deployment_mode: None,
            sequence: None,
            not_before: None,
            expires: None,
            grace_ends: None,
            max_agents: None,
            max_gateways: None,
            features: Vec::new(),
            installation_id: None,
            warnings: Vec::new(),
            clock_rollback: None,
            checked_at: now,
            expires_at: None,
            grace_ends_at: None,
        }
    }

    /// The state of a verified license at `now` (already the later of the clock and its
    /// high-water mark).
    pub fn of(signed: &SignedLicense, now: DateTime<Utc>) -> Self {
        let l = &signed.license;
        let grace_end = l.grace_end();
        let fmt = timestamp::format;
        let (state, message) = if now < l.not_before {
            (
                State::NotYetValid,
                format!(
                    "license {} is not valid before {}; admin writes are frozen until then",
                    l.id,
                    fmt(&l.not_before)
                ),
            )
        } else if now <= l.expires {
            (
                State::Valid,
                format!("license {} is valid until {}", l.id, fmt(&l.expires)),
            )
        } else if now <= grace_end {
            (
                State::Grace,
                format!(
                    "license {} expired on {}; the grace period ends on {}, then admin writes \
                     freeze (enforcement and audit continue); install a renewal",
                    l.id,
                    fmt(&l.expires),
                    fmt(&grace_end)
                ),
            )
        } else {
            (
                State::Expired,
                format!(
                    "license {} expired on {} and its grace period ended on {}: admin writes \
                     are frozen (enforcement and audit continue); install a renewal with \
                     POST /admin/license or `meshguard-license install`",
                    l.id,
                    fmt(&l.expires),
                    fmt(&grace_end)
                ),
            )
        };
        let mut warnings = Vec::new();
        let left = l.expires - now;
        if state == State::Valid && left.num_days() < WARN_DAYS {
            warnings.push(format!(
                "license {} expires in {} days ({}); ask the vendor for a renewal",
                l.id,
                left.num_days(),
                fmt(&l.expires)
            ));
        }
        if state == State::Grace {
            warnings.push(message.clone());
        }
        Self {
            admin_writes_allowed: matches!(state, State::Valid | State::Grace),
            state,
            message,
            license_id: Some(l.id.clone()),
            customer: Some(l.customer.clone()),
            edition: Some(l.edition.clone()),
            deployment_mode: Some(l.deployment_mode),
            sequence: Some(l.sequence),
            not_before: Some(fmt(&l.not_before)),
            expires: Some(fmt(&l.expires)),
            grace_ends: Some(fmt(&grace_end)),
            max_agents: l.entitlements.max_agents,
            max_gateways: l.entitlements.max_gateways,
            features: l.entitlements.features.clone(),
            installation_id: None,
            warnings,
            clock_rollback: None,
            checked_at: now,
            expires_at: Some(l.expires),
            grace_ends_at: Some(grace_end),
        }
    }
}
