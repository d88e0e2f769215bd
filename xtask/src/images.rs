//! `cargo xtask images`: the product's OCI images, built from this workspace's binaries with no
//! container daemon (`meshguard_bundler::image`), into one OCI layout.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;
use meshguard_bundler::image::{ProductBuild, build, product_specs};
use meshguard_bundler::oci::Layout;

#[derive(Debug, Args)]
pub(crate) struct ImagesArgs {
    /// The OCI layout to write (replaced as a whole once every image is built).
    #[arg(long, default_value = "target/images")]
    out: PathBuf,
    /// Use the debug binaries (faster to build; for tests); the default is the release build.
    #[arg(long)]
    debug: bool,
    /// Registry namespace of the images: NAMESPACE/gateway:VERSION, NAMESPACE/tools:VERSION.
    #[arg(long, default_value = "meshguard")]
    namespace: String,
}

pub(crate) fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--locked",
        "-p",
        "meshguard-gateway",
        "-p",
        "meshguard-bundler",
    ])
    .args(["-p", "meshguard-license", "--bins"]);
    if !args.debug {
        cmd.arg("--release");
    }
    println!(
        "building the {} binaries of meshguard-gateway, -bundle and -license",
        if args.debug { "debug" } else { "release" }
    );
    crate::run_checked(&mut cmd)?;
    let bin_dir = crate::root()
        .join("target")
        .join(if args.debug { "debug" } else { "release" });
    let out = crate::root().join(&args.out);
    for (reference, digest) in build_images(&bin_dir, &out, &args.namespace)? {
        println!("{reference}  {digest}");
    }
    println!("OCI layout: {}", out.display());
    Ok(())
}

/// `SOURCE_DATE_EPOCH`, or else the commit time of HEAD.
pub(crate) fn source_date_epoch() -> anyhow::Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
        _ => Ok(git(&["log", "-1", "--format=%ct"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)),
    }
}

pub(crate) fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(crate::root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds the product's images from the binaries in `bin_dir` into the layout `out` and
/// returns each image's reference and manifest digest.
pub(crate) fn build_images(
    bin_dir: &Path,
    out: &Path,
    namespace: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let product = ProductBuild {
        bin_dir: bin_dir.to_owned(),
        namespace: namespace.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
        source: env!("CARGO_PKG_REPOSITORY").to_owned(),
        license: env!("CARGO_PKG_LICENSE").to_owned(),
        created: source_date_epoch()?,
        ca_bundle: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
    };
    // Built beside the destination and put in place whole: a failed build leaves no layout
    // that looks complete.
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let mut layout = Layout::create(&partial)?;
    let mut built = Vec::new();
    for spec in product_specs(&product)? {
        let b = build(&mut layout, &spec)
            .with_context(|| format!("building the image {}", spec.reference))?;
        built.push((spec.reference.clone(), b.manifest.digest));
    }
    layout.write_index()?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("removing the old {}", out.display()))?;
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the new layout to {}", out.display()))?;
    Ok(built)
}
