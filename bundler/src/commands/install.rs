//! `meshguard-bundle install`: a site from media, in one command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use anyhow::Result;
use clap::Args;

use super::shared::{PassphraseArg, TrustArgs};
use meshguard_bundler::keys::MediaKey;

#[derive(Args, Debug)]
pub(crate) struct InstallArgs {
    /// The media directory (unpacked).
    pub(crate) media: PathBuf,
    /// The site file: release, profile, registry, ports, state directory, secrets files,
    /// environment values, bootstrap (docs/site-install.md).
    #[arg(long)]
    pub(crate) site: PathBuf,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    /// Install media older than what runs (rollback media).
    #[arg(long)]
    pub(crate) rollback: bool,
    /// Skip one of the runbook's smoke tests by name (repeatable): "sidecar heartbeat",
    /// "egress denial", "evidence export", ... The transcript records it as skipped by the
    /// operator; every other smoke test must pass.
    #[arg(long = "skip-smoke", value_name = "NAME")]
    pub(crate) skip_smoke: Vec<String>,
    /// The passphrase of the site's transcript key.
    #[command(flatten)]
    pub(crate) passphrase: PassphraseArg,
}

pub(crate) fn run(a: InstallArgs) -> Result<ExitCode> {
    let site = meshguard_bundler::site::SiteConfig::load(&a.site)?;
    meshguard_bundler::site::smoke::check_skips(&a.skip_smoke)?;
    let (key, opts) = a.trust.load()?;
    let transcript_key =
        MediaKey::load(&site.transcript_key, &a.passphrase.get()?).with_context(|| {
            format!(
                "cannot load the site's transcript key {}",
                site.transcript_key.display()
            )
        })?;
    let outcome = meshguard_bundler::site::install(&meshguard_bundler::site::Options {
        media: a.media,
        site,
        pubkey: &key,
        pubkey_file: a.trust.pubkey.clone(),
        license_pubkey_file: a.trust.license_pubkey.clone(),
        verify: opts,
        rollback: a.rollback,
        transcript_key: &transcript_key,
        skip_smoke: a.skip_smoke,
    })?;
    print!("{}", outcome.transcript_text);
    println!(
        "transcript: {} (signed: {}.minisig)",
        outcome.transcript_json.display(),
        outcome.transcript_json.display()
    );
    if !outcome.ok {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
