//! The media layout and `MEDIA.json`, the signed description of everything on it.
//!
//! ```text
//! MEDIA.json  SHA256SUMS  SHA256SUMS.minisig  [SHA256SUMS.sigstore.json]  VERIFY.txt
//! images/          one OCI image layout for every image (blobs shared)
//! charts/          the Helm chart
//! terraform/providers/  packed filesystem mirror (h1: and zh: in MEDIA.json)
//! terraform/modules/    the Terraform modules
//! policies/        policy-bundle.json + .minisig (the gateway's POLICY_BUNDLE format)
//! sbom/            CycloneDX 1.6: images/, binaries/, media.cdx.json
//! provenance/      media.intoto.dsse.json (in-toto Statement v1, SLSA provenance v1)
//! scans/           vulnerability reports, as given
//! license/         the license, and its age-encrypted form
//! ```

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "meshguard.media/v1";
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.minisig";
pub const SUMS_SIGSTORE: &str = "SHA256SUMS.sigstore.json";
pub const MEDIA_JSON: &str = "MEDIA.json";
pub const VERIFY_TXT: &str = "VERIFY.txt";
pub const POLICY_BUNDLE: &str = "policies/policy-bundle.json";
/// The signed egress allowlist (+ .minisig), what the gateway's egress proxy loads.
pub const EGRESS_ALLOWLIST: &str = "egress/egress-allowlist.json";
pub const PROVENANCE: &str = "provenance/media.intoto.dsse.json";

/// Files SHA256SUMS does not list: itself and its signatures.
pub const UNLISTED: &[&str] = &[SUMS, SUMS_SIG, SUMS_SIGSTORE];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaDoc {
    pub format: String,
    pub product: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub created_at: String,
    /// Set on differential media: the older media's SHA256SUMS digest and the image blobs
    /// left out because it holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    pub images: Vec<ImageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseEntry>,
    /// The gateway build the images carry, read from the binary's vendor-key slot at create;
    /// absent on media with no gateway image (and on media made before keyed builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRecord>,
    /// Every file on the media except MEDIA.json, SHA256SUMS and its signatures.
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Since {
    pub version: String,
    pub sha256sums: String,
    pub omitted_blobs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageEntry {
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderEntry {
    pub source: String,
    pub version: String,
    pub platform: String,
    pub path: String,
    pub h1: String,
    pub zh: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LicenseEntry {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// What the media's gateway is: `release` (with the vendor key stamped into it) or
/// `development` (licensing off; made only with `create --development`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildRecord {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_key_id: Option<String>,
    /// The images holding the gateway binary it was read from.
    pub images: Vec<String>,
}

impl BuildRecord {
    /// One line for people: what the build is and where it was read.
    pub fn describe(&self) -> String {
        match &self.vendor_key_id {
            Some(k) => format!(
                "{} build, vendor key {k} (read from the gateway binary in {})",
                self.kind,
                self.images.join(", ")
            ),
            None => format!(
                "{} build, licensing off: not for customers (read from the gateway binary in {})",
                self.kind,
                self.images.join(", ")
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Item {
    pub kind: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What kind of file `path` is, by where it lives.
pub fn kind_of(path: &str) -> &'static str {
    match path {
        VERIFY_TXT => "verify-guide",
        POLICY_BUNDLE => "policy-bundle",
        PROVENANCE => "provenance",
        _ if path.starts_with("images/blobs/") => "oci-blob",
        _ if path.starts_with("images/") => "oci-layout",
        _ if path.starts_with("charts/") => "helm-chart",
        _ if path.starts_with("terraform/providers/") => "terraform-provider",
        _ if path.starts_with("terraform/modules/") => "terraform-module",
        _ if path.starts_with("policies/") => "policy-bundle-signature",
        _ if path.starts_with("egress/") => "egress-allowlist",
        _ if path.starts_with("sbom/") => "sbom",
        _ if path.starts_with("scans/") => "scan-report",
        _ if path.starts_with("license/") => "license",
        _ => "other",
    }
}
