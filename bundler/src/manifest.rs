//! The media manifest a release engineer writes (YAML, schema `meshguard.media/v1`).
//!
//! ```yaml
//! schema: meshguard.media/v1
//! product: meshguard
//! version: 1.4.0
//! profile: air-gapped                        # optional, recorded in MEDIA.json
//! images:
//!   - ref: meshguard/gateway:1.4.0           # the tag in the media's OCI layout
//!     from: oci:images/gateway:1.4.0         # oci:DIR:TAG | oci-archive:FILE:TAG | docker://HOST/REPO:TAG
//! chart: helm/meshguard-gateway              # a chart directory or packaged .tgz
//! terraform:
//!   provider:
//!     version: 0.1.0
//!     binaries: { linux_amd64: dist/terraform-provider-meshguard }
//!   modules: modules/
//! policies: examples/policies/               # becomes a signed policy bundle
//! license: { file: acme.license, recipients: [age1…] }   # or encrypted: acme.license.age
//! scans: [reports/gateway.trivy.json]
//! sbom: { workspace: ., binaries: [meshguard-gateway, terraform-provider-meshguard] }
//! ```
//!
//! Paths are relative to the manifest's directory. Every error names the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marked_yaml::Spanned;
use serde::Deserialize;

use crate::BundleError;

pub const SCHEMA: &str = "meshguard.media/v1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: Spanned<String>,
    pub product: Spanned<String>,
    pub version: Spanned<String>,
    #[serde(default)]
    pub profile: Option<Spanned<String>>,
    #[serde(default)]
    pub images: Vec<ImageSpec>,
    #[serde(default)]
    pub chart: Option<Spanned<String>>,
    #[serde(default)]
    pub terraform: Option<TerraformSpec>,
    #[serde(default)]
    pub policies: Option<Spanned<String>>,
    /// An egress allowlist (meshguard-egress-allowlist/v1 JSON): signed onto the media.
    #[serde(default)]
    pub egress: Option<Spanned<String>>,
    #[serde(default)]
    pub license: Option<LicenseSpec>,
    #[serde(default)]
    pub scans: Vec<Spanned<String>>,
    #[serde(default)]
    pub sbom: Option<SbomSpec>,
    /// The source the media's binaries were built from: named in the provenance.
    #[serde(default)]
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The repository URL.
    pub repository: Spanned<String>,
    /// The commit, 40 hex digits.
    pub revision: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    #[serde(rename = "ref")]
    pub reference: Spanned<String>,
    pub from: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerraformSpec {
    #[serde(default)]
    pub provider: Option<ProviderSpec>,
    #[serde(default)]
    pub modules: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// `HOST/NAMESPACE/TYPE`; `registry.terraform.io/meshguard/meshguard` when absent.
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    pub version: Spanned<String>,
    /// platform (`linux_amd64`) → binary path
    pub binaries: BTreeMap<String, Spanned<String>>,
}

pub const DEFAULT_PROVIDER_SOURCE: &str = "registry.terraform.io/meshguard/meshguard";

impl ProviderSpec {
    pub fn source(&self) -> &str {
        self.source
            .as_ref()
            .map_or(DEFAULT_PROVIDER_SOURCE, |s| s.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSpec {
    pub file: Spanned<String>,
    /// Encrypt the license to these age recipients at create time (age uses fresh keys, so
    /// media made this way is not byte-reproducible).
    #[serde(default)]
    pub recipients: Vec<Spanned<String>>,
    /// Or ship this already age-encrypted copy as is (keeps the media reproducible).
    #[serde(default)]
    pub encrypted: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbomSpec {
    /// The cargo workspace the project binaries are built from.
    #[serde(default)]
    pub workspace: Option<Spanned<String>>,
    #[serde(default)]
    pub binaries: Vec<Spanned<String>>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Layout { dir: PathBuf, tag: String },
    Archive { file: PathBuf, tag: String },
    Registry { reference: String },
}

/// A loaded manifest with the file it came from, for resolving paths and naming lines.
#[derive(Debug)]
pub struct Loaded {
    pub manifest: Manifest,
    pub file: String,
    pub base: PathBuf,
}

/// A name or version token: letters, digits and `.-_+`, not empty.
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

pub fn line_of<T>(s: &Spanned<T>) -> usize {
    s.span().start().map_or(0, |m| m.line())
}

impl Loaded {
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io("read", path, e))?;
        let file = path.display().to_string();
        let manifest: Manifest = marked_yaml::from_yaml(0, &text).map_err(|e| {
            let (line, message) = match &e {
                marked_yaml::FromYamlError::ParseYaml(le) => (0, format!("invalid YAML: {le}")),
                marked_yaml::FromYamlError::FromNode(ne) => {
                    (ne.start_mark().map_or(0, |m| m.line()), ne.to_string())
                }
            };
            BundleError::Manifest {
                file: file.clone(),
                line,
                message,
            }
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let loaded = Self {
            manifest,
            file,
            base,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    pub fn error<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> BundleError {
        BundleError::Manifest {
            file: self.file.clone(),
            line: line_of(at),
            message: message.into(),
        }
    }

    /// A path from the manifest, resolved against its directory; must exist.
    pub fn path(&self, at: &Spanned<String>, what: &str) -> Result<PathBuf, BundleError> {
        let p = self.base.join(at.as_str());
        if !p.exists() {
            return Err(self.error(
                at,
                format!("{what} {} does not exist ({})", at.as_str(), p.display()),
            ));
        }
        Ok(p)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        if m.schema.as_str() != SCHEMA {
            return Err(self.error(
                &m.schema,
                format!(
                    "schema is {:?}; this meshguard-bundle reads {SCHEMA:?}",
                    m.schema.as_str()
                ),
            ));
        }
        if let Some(src) = &m.source {
            let rev = src.revision.as_str();
            if rev.len() != 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.error(
                    &src.revision,
                    format!(
                        "source.revision {rev:?} is not a 40-digit commit id (git rev-parse HEAD)"
                    ),
                ));
            }
        }
        if !token_ok(&m.product) {
            return Err(self.error(&m.product, "product must be a name like meshguard"));
        }
        if !token_ok(&m.version) {
            return Err(self.error(&m.version, "version must look like 1.4.0"));
        }
        let mut refs = std::collections::BTreeSet::new();
        for img in &m.images {
            self.image_source(img)?;
            check_ref(&img.reference).map_err(|e| self.error(&img.reference, e))?;
            if !refs.insert(img.reference.as_str().to_owned()) {
                return Err(self.error(
                    &img.reference,
                    format!("image ref {} is listed twice", img.reference.as_str()),
                ));
            }
        }
        if let Some(tf) = &m.terraform
            && let Some(p) = &tf.provider
        {
            self.validate_provider(p)?;
        }
        if let Some(l) = &m.license {
            self.validate_license(l)?;
        }
        Ok(())
    }

    /// The provider's source is HOST/NAMESPACE/TYPE, and it has binaries, each for a platform
    /// like linux_amd64.
    fn validate_provider(&self, p: &ProviderSpec) -> Result<(), BundleError> {
        if let Some(src) = &p.source
            && src.split('/').count() != 3
        {
            return Err(self.error(
                src,
                "provider source must be HOST/NAMESPACE/TYPE, e.g. \
                 registry.terraform.io/meshguard/meshguard",
            ));
        }
        if p.binaries.is_empty() {
            return Err(self.error(&p.version, "provider has no binaries (platform: path)"));
        }
        for (platform, bin) in &p.binaries {
            let ok = platform.split_once('_').is_some_and(|(os, arch)| {
                !os.is_empty() && !arch.is_empty() && token_ok(os) && token_ok(arch)
            });
            if !ok {
                return Err(self.error(
                    bin,
                    format!("{platform} is not a platform like linux_amd64"),
                ));
            }
        }
        Ok(())
    }

    /// The license is encrypted at create (to valid recipients) or given encrypted, not both.
    fn validate_license(&self, l: &LicenseSpec) -> Result<(), BundleError> {
        if let (Some(e), false) = (&l.encrypted, l.recipients.is_empty()) {
            return Err(self.error(
                e,
                "give either recipients (encrypt at create) or encrypted (a ready age file), not both",
            ));
        }
        for r in &l.recipients {
            meshguard_license::seal::parse_recipients(std::slice::from_ref(&r.as_str().to_owned()))
                .map_err(|e| self.error(r, e.to_string()))?;
        }
        Ok(())
    }

    pub fn image_source(&self, img: &ImageSpec) -> Result<ImageSource, BundleError> {
        let from = img.from.as_str();
        // As skopeo reads `oci:PATH:REF`: the path ends at the first colon, so the reference may
        // hold one (`oci:build:meshguard/gateway:1.4.0`).
        let split_tag = |rest: &str| -> Option<(PathBuf, String)> {
            let (path, tag) = rest.split_once(':')?;
            (!path.is_empty() && !tag.is_empty()).then(|| (self.base.join(path), tag.to_owned()))
        };
        if let Some(rest) = from.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest).ok_or_else(|| {
                self.error(
                    &img.from,
                    "expected oci:DIR:TAG, e.g. oci:build/gateway:1.4.0",
                )
            })?;
            return Ok(ImageSource::Layout { dir, tag });
        }
        if let Some(rest) = from.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest)
                .ok_or_else(|| self.error(&img.from, "expected oci-archive:FILE:TAG"))?;
            return Ok(ImageSource::Archive { file, tag });
        }
        if let Some(rest) = from.strip_prefix("docker://") {
            return Ok(ImageSource::Registry {
                reference: rest.to_owned(),
            });
        }
        Err(self.error(
            &img.from,
            format!("{from:?} names no known source; use oci:DIR:TAG, oci-archive:FILE:TAG or docker://HOST/REPO:TAG"),
        ))
    }
}

/// `name[:tag]` with registry-safe characters.
fn check_ref(r: &str) -> Result<(), String> {
    let ok = !r.is_empty()
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        && !r.starts_with('/')
        && !r.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image ref {r:?} must be lower-case name[:tag], e.g. meshguard/gateway:1.4.0"
        ))
    }
}
