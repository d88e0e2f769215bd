//! `meshguard-bundle images|provider-mirror`: the product's images and provider mirror from its binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Args;
use meshguard_license::VendorPublicKey;

#[derive(Args, Debug)]
pub(crate) struct ImagesArgs {
    /// The directory holding meshguard-gateway, meshguard-example-agent, meshguard-bundle and
    /// meshguard-license (e.g. target/release).
    #[arg(long)]
    pub(crate) bin_dir: PathBuf,
    /// The OCI layout to write (built beside it and renamed into place once complete).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Registry namespace: NAMESPACE/gateway:VERSION, NAMESPACE/tools:VERSION.
    #[arg(long, default_value = "meshguard")]
    pub(crate) namespace: String,
    /// The images' version tag (default: this tool's version, the workspace's).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub(crate) version: String,
    /// The source commit the binaries were built from (image label).
    #[arg(long, default_value = "unknown")]
    pub(crate) revision: String,
    /// The images' creation time, seconds since 1970, so rebuilds are byte-identical.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub(crate) created: i64,
    /// The CA bundle the images trust.
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub(crate) ca_bundle: PathBuf,
    /// The vendor's public key (vendor.pub): the gateway image gets a copy of meshguard-gateway
    /// stamped with it, a release build that always licenses with this key (the binary in
    /// --bin-dir is not changed). Without it the images hold a development build, which media
    /// for customers refuse (`meshguard-bundle create` without --development).
    #[arg(long, env = "MESHGUARD_VENDOR_PUBKEY", value_name = "FILE")]
    pub(crate) vendor_pubkey: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ProviderMirrorArgs {
    /// The terraform-provider-meshguard binary.
    #[arg(long)]
    pub(crate) binary: PathBuf,
    /// The mirror root to write into.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// The provider's version (default: this tool's version, the workspace's).
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub(crate) version: String,
    /// The binary's platform.
    #[arg(long, default_value = "linux_amd64")]
    pub(crate) platform: String,
}

pub(crate) fn run(a: ImagesArgs) -> Result<ExitCode> {
    let vendor_key = a
        .vendor_pubkey
        .as_deref()
        .map(VendorPublicKey::from_file)
        .transpose()
        .context("--vendor-pubkey (or MESHGUARD_VENDOR_PUBKEY) is not a vendor public key")?;
    let product = meshguard_bundler::image::ProductBuild {
        bin_dir: a.bin_dir,
        namespace: a.namespace,
        version: a.version,
        revision: a.revision,
        source: env!("CARGO_PKG_REPOSITORY").to_owned(),
        license: env!("CARGO_PKG_LICENSE").to_owned(),
        created: a.created,
        ca_bundle: a.ca_bundle,
        vendor_key,
    };
    let built = meshguard_bundler::image::build_product(&product, &a.out)?;
    for (reference, digest) in &built.images {
        println!("{reference}  {digest}");
    }
    println!("{}", build_line(&built));
    println!("OCI layout: {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// What the gateway image holds: a release build with its key, or a development build.
fn build_line(built: &meshguard_bundler::image::ProductBuilt) -> String {
    match built.keying.key() {
        Some(k) => format!(
            "gateway: release build, stamped with vendor key {} in {:.1} ms (no compile)",
            k.key_id(),
            built.stamping.as_secs_f64() * 1000.0
        ),
        None => "gateway: development build, licensing off (no --vendor-pubkey or \
                 MESHGUARD_VENDOR_PUBKEY); media for customers refuse it"
            .to_owned(),
    }
}

pub(crate) fn provider_mirror(a: ProviderMirrorArgs) -> Result<ExitCode> {
    let id = meshguard_bundler::tfmirror::ProviderId::meshguard(&a.version, &a.platform);
    let p = meshguard_bundler::tfmirror::pack(&a.binary, &id, &a.out)?;
    println!("{}\n  {}\n  {}", p.zip.display(), p.h1, p.zh);
    Ok(ExitCode::SUCCESS)
}
