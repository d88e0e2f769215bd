//! What several commands take: the passphrase, registry access, the keys media are trusted
//! with, the reproducible-build time and the admin token.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use meshguard_bundler::keys::{MediaPublicKey, Passphrase};
use meshguard_bundler::verify;

#[derive(Args, Debug)]
pub(crate) struct PassphraseArg {
    /// File holding the key passphrase; otherwise MESHGUARD_BUNDLE_PASSPHRASE is read.
    #[arg(long)]
    pub(crate) passphrase_file: Option<PathBuf>,
}

impl PassphraseArg {
    pub(crate) fn get(&self) -> Result<Passphrase> {
        Ok(Passphrase::from_file_or_env(
            self.passphrase_file.as_deref(),
            "MESHGUARD_BUNDLE_PASSPHRASE",
        )?)
    }
}

#[derive(Args, Debug)]
pub(crate) struct RegistryAccessArgs {
    /// PEM CAs to trust for the registry besides the built-in roots (the site's private CA).
    #[arg(long = "ca-bundle", value_name = "PEM")]
    pub(crate) registry_ca_bundle: Option<PathBuf>,
    /// The registry credentials (containers-auth.json, as `podman login --authfile` writes);
    /// before REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json and ~/.docker/config.json, which are also read.
    #[arg(long, value_name = "FILE")]
    pub(crate) authfile: Option<PathBuf>,
}

impl RegistryAccessArgs {
    pub(crate) fn access(&self, insecure: bool) -> meshguard_bundler::access::Access {
        meshguard_bundler::access::Access {
            insecure,
            ca_bundle: self.registry_ca_bundle.clone(),
            auth_file: self.authfile.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct TrustArgs {
    /// The publisher's minisign public key, obtained out of band.
    #[arg(long)]
    pub(crate) pubkey: PathBuf,
    /// The publisher's P-256 public key (PEM): also check SHA256SUMS.sigstore.json.
    #[arg(long)]
    pub(crate) cosign_pubkey: Option<PathBuf>,
    /// The license vendor's public key: also check the license on the media.
    #[arg(long)]
    pub(crate) license_pubkey: Option<PathBuf>,
    /// Refuse media of any other version.
    #[arg(long)]
    pub(crate) expect_version: Option<String>,
}

impl TrustArgs {
    pub(crate) fn load(&self) -> Result<(MediaPublicKey, verify::Options)> {
        let key = MediaPublicKey::from_file(&self.pubkey)?;
        let cosign_pubkey = self
            .cosign_pubkey
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()?;
        let license_pubkey = self
            .license_pubkey
            .as_deref()
            .map(meshguard_license::VendorPublicKey::from_file)
            .transpose()?;
        Ok((
            key,
            verify::Options {
                cosign_pubkey,
                license_pubkey,
                expect_version: self.expect_version.clone(),
            },
        ))
    }
}

pub(crate) fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        })?)),
        _ => Ok(None),
    }
}

/// The admin token: from a file, or MESHGUARD_ADMIN_TOKEN (never a flag's value).
pub(crate) fn admin_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(f) => Ok(std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the admin token file {}", f.display()))?
            .trim()
            .to_owned()),
        None => std::env::var("MESHGUARD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .context("no admin token: set MESHGUARD_ADMIN_TOKEN or --admin-token-file"),
    }
}
