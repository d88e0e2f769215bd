//! `meshguard-bundle create`: assemble and sign media from a manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::shared::{PassphraseArg, RegistryAccessArgs, source_date_epoch};
use meshguard_bundler::create;
use meshguard_bundler::keys::{CosignKey, MediaKey};
use meshguard_bundler::manifest;

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The media manifest (meshguard.media/v1, docs/media.md).
    #[arg(long)]
    pub(crate) manifest: PathBuf,
    /// The media directory to write (built beside it and renamed into place once signed).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The ed25519 (minisign) secret key that signs the media.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// A P-256 secret key: also write SHA256SUMS.sigstore.json.
    #[arg(long)]
    pub(crate) cosign_key: Option<PathBuf>,
    /// Older media: leave out the image layers it already holds (differential media).
    #[arg(long)]
    pub(crate) since: Option<PathBuf>,
    /// A registry to reach over plain HTTP (repeatable), e.g. 127.0.0.1:5000.
    #[arg(long = "insecure-registry")]
    pub(crate) insecure_registries: Vec<String>,
    /// Media not for customers: allow a development build of the gateway (no vendor key
    /// stamped in it; licensing off). MEDIA.json records which build the media carries.
    #[arg(long)]
    pub(crate) development: bool,
    #[command(flatten)]
    pub(crate) registry_access: RegistryAccessArgs,
    #[command(flatten)]
    pub(crate) passphrase: PassphraseArg,
}

pub(crate) fn run(a: CreateArgs) -> Result<ExitCode> {
    let m = manifest::Loaded::load(&a.manifest)?;
    let pass = a.passphrase.get()?;
    let key = MediaKey::load(&a.key, &pass)?;
    let cosign = a
        .cosign_key
        .as_deref()
        .map(|p| CosignKey::load(p, &pass))
        .transpose()?;
    let created = create::create(
        &m,
        &create::Options {
            out: a.out.clone(),
            key: &key,
            cosign: cosign.as_ref(),
            since: a.since,
            source_date_epoch: source_date_epoch()?,
            insecure_registries: a.insecure_registries,
            access: a.registry_access.access(false),
            development: a.development,
        },
    )?;
    println!(
        "created {}: {} files, {} bytes, {} image(s){}; signed by {}",
        created.dir.display(),
        created.files,
        created.bytes,
        created.images,
        if created.omitted_blobs > 0 {
            format!(
                ", {} layer(s) left to the older media",
                created.omitted_blobs
            )
        } else {
            String::new()
        },
        key.public().key_id()
    );
    Ok(ExitCode::SUCCESS)
}
