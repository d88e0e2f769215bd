//! `meshguard-bundle images|provider-mirror`: the product's images and provider mirror from its binaries.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

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
    let product = meshguard_bundler::image::ProductBuild {
        bin_dir: a.bin_dir,
        namespace: a.namespace,
        version: a.version,
        revision: a.revision,
        source: env!("CARGO_PKG_REPOSITORY").to_owned(),
        license: env!("CARGO_PKG_LICENSE").to_owned(),
        created: a.created,
        ca_bundle: a.ca_bundle,
    };
    for (reference, digest) in meshguard_bundler::image::build_product(&product, &a.out)? {
        println!("{reference}  {digest}");
    }
    println!("OCI layout: {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn provider_mirror(a: ProviderMirrorArgs) -> Result<ExitCode> {
    let id = meshguard_bundler::tfmirror::ProviderId::meshguard(&a.version, &a.platform);
    let p = meshguard_bundler::tfmirror::pack(&a.binary, &id, &a.out)?;
    println!("{}\n  {}\n  {}", p.zip.display(), p.h1, p.zh);
    Ok(ExitCode::SUCCESS)
}
