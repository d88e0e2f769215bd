//! `cargo xtask images`: the product's OCI images, built from this workspace's binaries with no
//! container daemon (`meshguard-bundle images`), into one OCI layout.
//!
//! `MESHGUARD_VENDOR_PUBKEY=path/to/vendor.pub cargo xtask images --release` makes the gateway
//! image a release build: `meshguard-bundle images` reads the variable (it is passed through
//! with the rest of the environment) and stamps the key into the image's copy of the gateway
//! binary, with no second compile. Without it the images hold a development build.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use clap::Args;

/// Set MESHGUARD_VENDOR_PUBKEY=path/to/vendor.pub for a release build of the gateway image (the
/// vendor's key stamped into the image's copy of the binary); without it the gateway image is a
/// development build, which `meshguard-bundle create` refuses for customer media unless given
/// --development.
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
    let bins = crate::build_binaries(!args.debug)?;
    crate::run_checked(&mut images_command(
        &bins,
        &crate::root().join(&args.out),
        &args.namespace,
    )?)
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

/// The command that builds the product's images from the binaries in `bin_dir` into the layout
/// `out` (`meshguard-bundle images`, which prints each image's reference and digest).
pub(crate) fn images_command(
    bin_dir: &Path,
    out: &Path,
    namespace: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin_dir.join("meshguard-bundle"));
    cmd.arg("images")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out)
        .args(["--namespace", namespace])
        .args(["--version", env!("CARGO_PKG_VERSION")])
        .args([
            "--revision",
            &git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
        ])
        .args(["--created", &source_date_epoch()?.to_string()]);
    Ok(cmd)
}
