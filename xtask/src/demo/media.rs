//! Steps 12 and 13: the vendor builds signed offline media of the product (`meshguard-bundle
//! create`); the site verifies it with no network and imports it into .demo/site.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Demo, run_indented, step};
use crate::root;

/// The one destination a disconnected site's agents may reach: the egress allowlist the site's
/// egress proxy enforces (the install's egress smoke test needs the proxy running).
const EGRESS: &str = r#"{"format": "meshguard-egress-allowlist/v1", "version": 1, "destinations": [{"host": "records.site.internal", "ports": [443], "region": "local"}]}"#;

/// Step 12: the product images, the chart, the provider, modules, policies and the license, in
/// media signed with a media key of the vendor's.
pub(super) fn create(demo: &Demo) -> anyhow::Result<()> {
    step(
        "offline media: the product images (cargo xtask images), the chart, the provider, modules, policies and the license, signed (meshguard-bundle create)",
    );
    let src = demo.dir.join("media-src");
    fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    // The product's own images (meshguard/gateway, meshguard/tools) from the binaries built in
    // step 1; the gateway keyed with the demo vendor's key, as a release for customers is.
    run_indented(
        crate::images::images_command(&demo.bins, &src.join("layout"), "meshguard")?
            .arg("--vendor-pubkey")
            .arg(demo.vendor_dir().join("vendor.pub")),
    )?;
    write_manifest(demo, &src)?;
    run_indented(&mut bundle(
        demo,
        &[
            "keys",
            "generate",
            "--secret",
            "vendor/media.key",
            "--public",
            "vendor/media.pub",
        ],
    ))?;
    run_indented(&mut bundle(
        demo,
        &[
            "create",
            "--manifest",
            "media-src/media.yaml",
            "--out",
            "media",
            "--key",
            "vendor/media.key",
        ],
    ))
}

/// media-src/media.yaml (and the egress allowlist it names): what goes on the media.
fn write_manifest(demo: &Demo, src: &Path) -> anyhow::Result<()> {
    let egress = src.join("egress.json");
    fs::write(&egress, EGRESS).with_context(|| format!("cannot write {}", egress.display()))?;
    let r = root().display().to_string();
    let manifest = format!(
        "schema: meshguard.media/v1
product: meshguard
version: {v}
profile: air-gapped
images:
  - ref: meshguard/gateway:{v}
    from: oci:layout:meshguard/gateway:{v}
  - ref: meshguard/tools:{v}
    from: oci:layout:meshguard/tools:{v}
chart: {r}/helm/meshguard-gateway
terraform:
  provider:
    version: {v}
    binaries: {{linux_amd64: {provider}}}
  modules: {r}/modules
policies: {r}/examples/policies
egress: {egress}
license: {{file: {lic}}}
sbom: {{workspace: {r}, binaries: [meshguard-gateway, terraform-provider-meshguard]}}
{source}",
        v = env!("CARGO_PKG_VERSION"),
        lic = demo.vendor_dir().join("demo.license").display(),
        egress = egress.display(),
        provider = demo.bin("terraform-provider-meshguard").display(),
        source = crate::images::git(&["rev-parse", "HEAD"])
            .map(|rev| format!(
                "source: {{repository: {}, revision: {rev}}}\n",
                env!("CARGO_PKG_REPOSITORY")
            ))
            .unwrap_or_default()
    );
    let path = src.join("media.yaml");
    fs::write(&path, manifest).with_context(|| format!("cannot write {}", path.display()))
}

/// Step 13: `meshguard-bundle verify` (with a transcript) and `import` into .demo/site, the
/// provider into site/terraform-mirror; shows the import's receipt.
pub(super) fn verify_and_import(demo: &Demo) -> anyhow::Result<()> {
    step(
        "verifying the media with no network (meshguard-bundle verify), then importing it into .demo/site",
    );
    run_indented(&mut bundle(
        demo,
        &[
            "verify",
            "media",
            "--pubkey",
            "vendor/media.pub",
            "--license-pubkey",
            "vendor/vendor.pub",
            "--transcript",
            "media-verification",
        ],
    ))?;
    let out = bundle(
        demo,
        &[
            "import",
            "media",
            "--pubkey",
            "vendor/media.pub",
            "--dest",
            "site",
            "--terraform-mirror",
            "site/terraform-mirror",
        ],
    )
    .output()
    .context("cannot run meshguard-bundle import")?;
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let receipt: Value = serde_json::from_slice(&out.stdout)
        .context("meshguard-bundle import printed no JSON receipt")?;
    println!(
        "    imported {} {}: images {} into site/images (OCI layout), provider into site/terraform-mirror, {} files",
        receipt["product"].as_str().unwrap_or("?"),
        receipt["version"].as_str().unwrap_or("?"),
        receipt["images"],
        receipt["files"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

/// `meshguard-bundle ARGS` in the demo's directory; the commands that use the vendor's key get
/// its passphrase file.
fn bundle(demo: &Demo, args: &[&str]) -> Command {
    let mut c = Command::new(demo.bin("meshguard-bundle"));
    c.args(args)
        .current_dir(&demo.dir)
        .env_remove("SOURCE_DATE_EPOCH");
    if ["keys", "create"].contains(&args[0]) {
        c.args(["--passphrase-file", "vendor/passphrase"]);
    }
    c
}
