//! The documents: license, activation request, activation; and their signed forms.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dsse::Envelope;
use crate::keys::{VendorKey, VendorPublicKey};
use crate::{LicenseError, canonical};

pub const LICENSE_SCHEMA: &str = "meshguard.license/v1";
pub const REQUEST_SCHEMA: &str = "meshguard.activation-request/v1";
pub const ACTIVATION_SCHEMA: &str = "meshguard.activation/v1";
pub const LICENSE_PAYLOAD_TYPE: &str = "application/vnd.meshguard.license.v1+json";
pub const ACTIVATION_PAYLOAD_TYPE: &str = "application/vnd.meshguard.activation.v1+json";

/// RFC 3339 timestamps in UTC with whole seconds (`2027-01-31T00:00:00Z`).
pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// Parses RFC 3339 (any offset) to UTC.
    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2027-01-31T00:00:00Z ({e})"))
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where and how the licensed MeshGuard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentMode {
    /// Managed SaaS, US region group.
    SaasUs,
    /// Managed SaaS, EU region group.
    SaasEu,
    /// Managed SaaS, UK.
    SaasUk,
    /// A dedicated tenant operated by the vendor.
    DedicatedTenant,
    /// The customer's cloud account, operated by the vendor.
    VendorOperatedCloud,
    /// The customer's cloud account, operated by the customer.
    CustomerCloud,
    /// The customer's own Kubernetes clusters on premises.
    OnPremKubernetes,
    /// A disconnected site with no network path to the vendor.
    AirGapped,
}

impl DeploymentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SaasUs => "saas-us",
            Self::SaasEu => "saas-eu",
            Self::SaasUk => "saas-uk",
            Self::DedicatedTenant => "dedicated-tenant",
            Self::VendorOperatedCloud => "vendor-operated-cloud",
            Self::CustomerCloud => "customer-cloud",
            Self::OnPremKubernetes => "on-prem-kubernetes",
            Self::AirGapped => "air-gapped",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            let all: Vec<_> = <Self as clap::ValueEnum>::value_variants()
                .iter()
                .map(|m| m.as_str())
                .collect();
            format!(
                "{s:?} is not a deployment mode; use one of {}",
                all.join(", ")
            )
        })
    }
}

/// What the license allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entitlements {
    /// Most active (not revoked) agents; `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_agents: Option<u64>,
    /// Most gateways serving at once on one installation (gateways sharing a PostgreSQL
    /// control plane are one installation); `None` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gateways: Option<u64>,
    /// Named features, e.g. `evidence-profiles`.
    #[serde(default)]
    pub features: Vec<String>,
}

/// A license as the vendor issues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct License {
    pub schema: String,
    pub id: String,
    pub customer: String,
    pub edition: String,
    pub deployment_mode: DeploymentMode,
    pub entitlements: Entitlements,
    /// Regions the software may run in; `*` allows any.
    pub regions: Vec<String>,
    #[serde(with = "timestamp")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "timestamp")]
    pub expires: DateTime<Utc>,
    /// Days after `expires` during which everything keeps working, with warnings.
    pub grace_days: u32,
    /// Grows with every renewal of this `id`; a lower one is a replay.
    pub sequence: u64,
    #[serde(with = "timestamp")]
    pub issued_at: DateTime<Utc>,
}

impl License {
    /// Checks what a signature cannot: the fields make sense together.
    pub fn validate(&self) -> Result<(), LicenseError> {
        let bad = |m: String| LicenseError::Invalid(format!("license {}: {m}", self.id));
        if self.schema != LICENSE_SCHEMA {
            return Err(bad(format!(
                "schema {:?} is not {LICENSE_SCHEMA:?}; this release cannot read it",
                self.schema
            )));
        }
        if self.id.trim().is_empty() || self.customer.trim().is_empty() {
            return Err(bad("id and customer must not be empty".into()));
        }
        if self.expires <= self.not_before {
            return Err(bad(format!(
                "expires ({}) is not after notBefore ({})",
                timestamp::format(&self.expires),
                timestamp::format(&self.not_before)
            )));
        }
        if self.regions.is_empty() {
            return Err(bad("regions is empty; list regions or use \"*\"".into()));
        }
        if self.sequence == 0 {
            return Err(bad("sequence starts at 1".into()));
        }
        Ok(())
    }

    pub fn grace_end(&self) -> DateTime<Utc> {
        self.expires + Duration::days(i64::from(self.grace_days))
    }

    pub fn allows_region(&self, region: &str) -> bool {
        self.regions.iter().any(|r| r == "*" || r == region)
    }

    /// Signs the license's canonical JSON in a DSSE envelope.
    pub fn sign(&self, key: &VendorKey) -> Result<SignedLicense, LicenseError> {
        self.validate()?;
        let payload = canonical::to_vec(self)?;
        Ok(SignedLicense {
            envelope: Envelope::sign(LICENSE_PAYLOAD_TYPE, &payload, key),
            license: self.clone(),
            payload,
        })
    }
}

/// A license with the envelope it was verified from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLicense {
    pub envelope: Envelope,
    pub license: License,
    /// The exact signed bytes.
    pub payload: Vec<u8>,
}

impl SignedLicense {
    /// Verifies the signature with `key`, then parses and validates the license.
    pub fn verify(bytes: &[u8], key: &VendorPublicKey, what: &str) -> Result<Self, LicenseError> {
        let envelope = Envelope::from_json(bytes, what)?;
        Self::verify_envelope(envelope, key, what)
    }

    pub fn verify_envelope(
        envelope: Envelope,
        key: &VendorPublicKey,
        what: &str,
    ) -> Result<Self, LicenseError> {
        let payload = envelope.verify(LICENSE_PAYLOAD_TYPE, key, what)?;
        let license: License = parse_payload(&payload, what, "MeshGuard license")?;
        license.validate()?;
        Ok(Self {
            envelope,
            license,
            payload,
        })
    }

    /// Hex SHA-256 of the signed payload: names this exact license.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(&self.payload))
    }
}

fn parse_payload<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    what: &str,
    kind: &'static str,
) -> Result<T, LicenseError> {
    serde_json::from_slice(payload).map_err(|e| LicenseError::Format {
        what: what.to_owned(),
        kind,
        detail: e.to_string(),
    })
}

/// What a site sends the vendor to activate a license on one installation. Not signed: the
/// vendor's activation binds its digest, and the site only accepts an activation that answers
/// its own pending request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivationRequest {
    pub schema: String,
    pub license_id: String,
    pub installation_id: String,
    /// 128 random bits, hex: makes every request, and so every activation, single-use.
    pub nonce: String,
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_mode: Option<DeploymentMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub software_version: String,
}

impl ActivationRequest {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, LicenseError> {
        let r: Self = parse_payload(bytes, what, "activation request")?;
        if r.schema != REQUEST_SCHEMA {
            return Err(LicenseError::Invalid(format!(
                "{what}: schema {:?} is not {REQUEST_SCHEMA:?}",
                r.schema
            )));
        }
        Ok(r)
    }

    /// Hex SHA-256 of the request's canonical JSON.
    pub fn digest(&self) -> Result<String, LicenseError> {
        Ok(hex::encode(Sha256::digest(canonical::to_vec(self)?)))
    }
}

/// The vendor's answer to one activation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Activation {
    pub schema: String,
    pub license_id: String,
    pub installation_id: String,
    pub nonce: String,
    /// [`ActivationRequest::digest`] of the request answered.
    pub request_sha256: String,
    #[serde(with = "timestamp")]
    pub activated_at: DateTime<Utc>,
}

impl Activation {
    /// The vendor side: checks the request names this license and its mode, then answers it.
    pub fn for_request(
        license: &License,
        request: &ActivationRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, LicenseError> {
        if request.license_id != license.id {
            return Err(LicenseError::Activation(format!(
                "the request is for license {}, not {}; activate it with that license",
                request.license_id, license.id
            )));
        }
        if let Some(mode) = request.deployment_mode
            && mode != license.deployment_mode
        {
            return Err(LicenseError::WrongMode {
                id: license.id.clone(),
                licensed: license.deployment_mode.as_str().into(),
                configured: mode.as_str().into(),
            });
        }
        if let Some(region) = &request.region
            && !license.allows_region(region)
        {
            return Err(LicenseError::WrongRegion {
                id: license.id.clone(),
                allowed: license.regions.join(", "),
                configured: region.clone(),
            });
        }
        Ok(Self {
            schema: ACTIVATION_SCHEMA.into(),
            license_id: license.id.clone(),
            installation_id: request.installation_id.clone(),
            nonce: request.nonce.clone(),
            request_sha256: request.digest()?,
            activated_at: now,
        })
    }

    pub fn sign(&self, key: &VendorKey) -> Result<SignedActivation, LicenseError> {
        let payload = canonical::to_vec(self)?;
        Ok(SignedActivation {
            envelope: Envelope::sign(ACTIVATION_PAYLOAD_TYPE, &payload, key),
            activation: self.clone(),
        })
    }
}

/// An activation with the envelope it was verified from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedActivation {
    pub envelope: Envelope,
    pub activation: Activation,
}

impl SignedActivation {
    pub fn verify(bytes: &[u8], key: &VendorPublicKey, what: &str) -> Result<Self, LicenseError> {
        Self::verify_envelope(Envelope::from_json(bytes, what)?, key, what)
    }

    pub fn verify_envelope(
        envelope: Envelope,
        key: &VendorPublicKey,
        what: &str,
    ) -> Result<Self, LicenseError> {
        let payload = envelope.verify(ACTIVATION_PAYLOAD_TYPE, key, what)?;
        let activation: Activation = parse_payload(&payload, what, "MeshGuard activation")?;
        if activation.schema != ACTIVATION_SCHEMA {
            return Err(LicenseError::Invalid(format!(
                "{what}: schema {:?} is not {ACTIVATION_SCHEMA:?}",
                activation.schema
            )));
        }
        Ok(Self {
            envelope,
            activation,
        })
    }
}
