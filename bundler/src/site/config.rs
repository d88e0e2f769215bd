//! The site file (`site.yaml`): what one disconnected site decides for itself. Secrets are
//! named by file, never written in it; relative paths are taken from the file's directory.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// The deployment modes the chart has a values profile for.
pub const PROFILES: &[&str] = &[
    "managed-saas",
    "dedicated-tenant",
    "customer-cloud",
    "on-prem-kubernetes",
    "air-gapped",
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SiteConfig {
    /// The Helm release name; pods, volumes and secrets are named from it.
    pub release: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// One of [`PROFILES`]; the chart's values-<profile>.yaml.
    pub profile: String,
    /// Where the media's images are imported and pulled from.
    pub registry: Registry,
    /// The loopback port the gateway answers on.
    pub port: u16,
    /// The port a new version answers on while it is smoke-tested beside the running one.
    #[serde(default)]
    pub candidate_port: Option<u16>,
    /// The port of the egress proxy, when the media carries an egress allowlist (default
    /// port + 2).
    #[serde(default)]
    pub egress_port: Option<u16>,
    /// The loopback port of the smoke test's guardian sidecar (default port + 3).
    #[serde(default)]
    pub sidecar_port: Option<u16>,
    /// How long a starting gateway has to answer /health before the start counts as failed.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_seconds: u64,
    /// Where the site's state lives: imported releases, the Terraform mirror and state,
    /// rendered manifests, transcripts.
    pub state_dir: PathBuf,
    pub secrets: Secrets,
    /// The site's minisign secret key (`meshguard-bundle keys generate`) that signs the
    /// installation transcript; the site keeps its public key to check transcripts.
    pub transcript_key: PathBuf,
    /// More chart values files, applied after the profile's.
    #[serde(default)]
    pub values_files: Vec<PathBuf>,
    #[serde(default)]
    pub environment: Environment,
    /// The vendor's answer (`meshguard-license activate`) to this site's activation request,
    /// which the first install writes to STATE/license/request.json.
    #[serde(default)]
    pub license_activation: Option<PathBuf>,
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registry {
    /// HOST:PORT of the site registry.
    pub address: String,
    /// Plain HTTP (a registry on loopback or inside the enclave without TLS).
    #[serde(default)]
    pub insecure: bool,
    /// PEM CAs the registry's certificate chains to (the site's private CA): trusted by the
    /// push and handed to podman (`--cert-dir`).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// The registry credentials (containers-auth.json): used by the push and by podman
    /// (`--authfile`); without it the standard auth files are read.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
}

impl Registry {
    /// podman's flags for pulling from this registry: `--authfile`, and `--cert-dir` with the
    /// CA bundle copied in as `ca.crt` (podman reads a directory of `*.crt` roots).
    pub fn podman_args(&self, state_dir: &Path) -> Result<Vec<String>> {
        let mut args = Vec::new();
        if let Some(f) = &self.auth_file {
            args.push(format!("--authfile={}", f.display()));
        }
        if let Some(ca) = &self.ca_bundle {
            let dir = state_dir.join("registry-certs");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the registry CA bundle {}", ca.display()))?;
            crate::fsx::write_atomic(&dir.join("ca.crt"), &pem)?;
            args.push(format!("--cert-dir={}", dir.display()));
        }
        Ok(args)
    }

    pub fn access(&self) -> crate::access::Access {
        crate::access::Access {
            insecure: self.insecure,
            ca_bundle: self.ca_bundle.clone(),
            auth_file: self.auth_file.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Secrets {
    /// A file holding the gateway's admin token (at least 32 characters).
    pub admin_token_file: PathBuf,
    /// A file holding the JWT signing secret (at least 32 characters).
    pub jwt_secret_file: PathBuf,
}

/// The runbook's environment values (step 4).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    /// The site's identity provider (OIDC issuer URL).
    #[serde(default)]
    pub identity_provider: Option<String>,
    /// The customer-managed key or HSM reference (e.g. a PKCS#11 URI).
    #[serde(default)]
    pub key_management: Option<String>,
    /// Where the audit archive goes.
    #[serde(default)]
    pub archive: Option<String>,
    /// The SIEM the audit trail is mirrored to.
    #[serde(default)]
    pub siem: Option<String>,
    /// The region this site is pinned to (the license must name it).
    #[serde(default)]
    pub region: Option<String>,
    /// Destinations agents may reach (the egress allowlist).
    #[serde(default)]
    pub destinations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bootstrap {
    /// A module on the media (terraform/modules/NAME).
    pub module: String,
    /// Its input values (a .tfvars or .tfvars.json file).
    #[serde(default)]
    pub var_file: Option<PathBuf>,
}

fn default_start_timeout() -> u64 {
    180
}

fn default_namespace() -> String {
    "default".into()
}

impl SiteConfig {
    /// Reads and checks a site file; every relative path becomes relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the site file {}", path.display()))?;
        let mut site: SiteConfig = marked_yaml::from_yaml(0, &text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid site file: {e} (see docs/site-install.md for its fields)",
                path.display()
            )
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base)
            .with_context(|| format!("cannot resolve {}", base.display()))?;
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut site.state_dir);
        abs(&mut site.secrets.admin_token_file);
        abs(&mut site.secrets.jwt_secret_file);
        abs(&mut site.transcript_key);
        if let Some(f) = &mut site.registry.ca_bundle {
            abs(f);
        }
        if let Some(f) = &mut site.registry.auth_file {
            abs(f);
        }
        site.values_files.iter_mut().for_each(abs);
        if let Some(f) = &mut site.license_activation {
            abs(f);
        }
        if let Some(b) = &mut site.bootstrap
            && let Some(f) = &mut b.var_file
        {
            abs(f);
        }
        site.check()?;
        Ok(site)
    }

    fn check(&self) -> Result<()> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 40
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.as_bytes()[0].is_ascii_lowercase()
                && !s.ends_with('-')
        };
        if !name_ok(&self.release) {
            bail!(
                "release {:?} is not a valid name: use 1-40 lowercase letters, digits and '-', starting with a letter",
                self.release
            );
        }
        if !name_ok(&self.namespace) {
            bail!("namespace {:?} is not a valid name", self.namespace);
        }
        if !PROFILES.contains(&self.profile.as_str()) {
            bail!(
                "profile {:?} is not one the chart has; use one of {}",
                self.profile,
                PROFILES.join(", ")
            );
        }
        let ports = [
            self.port,
            self.candidate_port(),
            self.egress_port(),
            self.sidecar_port(),
        ];
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        if ports.contains(&0) || distinct.len() != ports.len() {
            bail!(
                "port, candidatePort, egressPort and sidecarPort must be four different, non-zero ports"
            );
        }
        if self.registry.address.contains('/') || !self.registry.address.contains(':') {
            bail!(
                "registry.address {:?} must be HOST:PORT (no scheme, no path)",
                self.registry.address
            );
        }
        Ok(())
    }

    pub fn egress_port(&self) -> u16 {
        self.egress_port
            .unwrap_or_else(|| self.port.wrapping_add(2))
    }

    pub fn sidecar_port(&self) -> u16 {
        self.sidecar_port
            .unwrap_or_else(|| self.port.wrapping_add(3))
    }

    pub fn candidate_port(&self) -> u16 {
        self.candidate_port
            .unwrap_or_else(|| self.port.wrapping_add(1))
    }

    /// Reads a secret file: trimmed, at least 32 characters. The error names the file, never
    /// its content.
    pub fn read_secret(path: &Path, what: &str) -> Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
        let text = text.trim().to_owned();
        if text.len() < 32 {
            bail!(
                "the {what} in {} is shorter than 32 characters; put a longer random secret there",
                path.display()
            );
        }
        Ok(text)
    }
}
