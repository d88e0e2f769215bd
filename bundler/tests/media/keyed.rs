//! Release and development builds on media (issue #36): `meshguard-bundle images
//! --vendor-pubkey` stamps the gateway image's copy of the binary and never the file it was built
//! from; `create` reads the binary's slot (not a label), refuses a development build unless
//! `--development`, refuses a license of another vendor, and records the build in MEDIA.json,
//! which `verify` and `inspect` print.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use meshguard_bundler::image::{BUILD_LABEL, VENDOR_KEY_LABEL, build, product_specs};
use meshguard_bundler::oci::Layout;

use crate::pods::{bin_dir, product};
use crate::support::{bundle, fails, keys, manifest, ok, run_ok, umoci_image};

const LICENSE_PASSPHRASE: &str = "vendor-passphrase-for-tests";

#[test]
fn media_tell_a_release_build_from_a_development_build_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (vendor(d, "vendor-a"), vendor(d, "vendor-b"));
    license(d, "vendor-a", "a.license");
    license(d, "vendor-b", "b.license");

    let gateway = bin_dir().join("meshguard-gateway");
    let before = std::fs::read(&gateway).unwrap();
    let stamped = images(d, "keyed", Some("vendor-a.pub"));
    assert!(
        stamped.contains(&format!("release build, stamped with vendor key {a}")),
        "{stamped}"
    );
    let plain = images(d, "dev", None);
    assert!(plain.contains("development build"), "{plain}");
    assert_eq!(
        std::fs::read(&gateway).unwrap(),
        before,
        "the built binary is never changed"
    );
    let labels = labels(d, "keyed");
    assert_eq!(labels["io.meshguard.build"], "release", "{labels}");
    assert_eq!(labels["io.meshguard.vendor-key-id"], a.as_str(), "{labels}");

    a_development_build_needs_development(d);
    a_label_saying_release_changes_nothing(d, &a);
    a_release_build_is_recorded_and_checked_against_the_license(d, &a, &b);
    media_without_a_gateway_has_no_build_record(d);
}

/// Refused without `--development`, naming the image and what to do; recorded with it.
fn a_development_build_needs_development(d: &Path) {
    let man = manifest(d, "1.0.0", &gateway_images("dev", "1.0.0"));
    let err = fails(
        create(d, &man, "dev-media", &[]),
        "create of a development build",
    );
    for want in [
        "meshguard/gateway:1.0.0",
        "development build",
        "MESHGUARD_VENDOR_PUBKEY",
        "--development",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!d.join("dev-media").exists(), "nothing made");
    ok(
        create(d, &man, "dev-media", &["--development"]),
        "create --development",
    );
    let build = &media_json(d, "dev-media")["build"];
    assert_eq!(build["kind"], "development", "{build}");
    assert!(build.get("vendorKeyId").is_none(), "{build}");
    let out = verify(d, "dev-media", &[]);
    assert!(
        out.contains("development build, licensing off: not for customers"),
        "{out}"
    );
}

/// A development build whose image says `io.meshguard.build=release` (and names a vendor key)
/// is still refused: create reads the binary, never a label.
fn a_label_saying_release_changes_nothing(d: &Path, key_id: &str) {
    let (mut specs, _) = product_specs(&product(1_780_000_000)).unwrap();
    let gateway = specs
        .iter_mut()
        .find(|s| s.reference.contains("gateway"))
        .unwrap();
    gateway.reference = "meshguard/gateway:1.0.0".into();
    gateway.labels.insert(BUILD_LABEL.into(), "release".into());
    gateway
        .labels
        .insert(VENDOR_KEY_LABEL.into(), key_id.into());
    let mut layout = Layout::create(&d.join("forged")).unwrap();
    build(&mut layout, gateway).unwrap();
    layout.write_index().unwrap();
    assert_eq!(labels(d, "forged")["io.meshguard.build"], "release");
    let man = manifest(d, "1.0.1", &gateway_images("forged", "1.0.1"));
    let err = fails(
        create(d, &man, "forged-media", &[]),
        "create of a relabelled development build",
    );
    assert!(err.contains("development build"), "{err}");
}

/// Recorded with the vendor key id, printed by verify and inspect; a license of another
/// vendor, and verify with another vendor's key, are refused naming both key ids.
fn a_release_build_is_recorded_and_checked_against_the_license(d: &Path, a: &str, b: &str) {
    let other = manifest(
        d,
        "2.0.0",
        &format!(
            "{}license: {{file: b.license}}\n",
            gateway_images("keyed", "2.0.0")
        ),
    );
    let err = fails(
        create(d, &other, "wrong-vendor", &[]),
        "create with another vendor's license",
    );
    assert!(err.contains(a) && err.contains(b), "both key ids: {err}");

    let man = manifest(
        d,
        "2.0.1",
        &format!(
            "{}license: {{file: a.license}}\n",
            gateway_images("keyed", "2.0.1")
        ),
    );
    ok(
        create(d, &man, "release-media", &[]),
        "create of a release build",
    );
    let build = &media_json(d, "release-media")["build"];
    assert_eq!(build["kind"], "release", "{build}");
    assert_eq!(build["vendorKeyId"], a, "{build}");
    assert_eq!(build["images"][0], "meshguard/gateway:2.0.1", "{build}");
    let out = verify(d, "release-media", &["--license-pubkey", "vendor-a.pub"]);
    assert!(
        out.contains(&format!("release build, vendor key {a}")),
        "{out}"
    );
    let inspected = ok(bundle(&["inspect", "release-media"], d), "inspect");
    assert!(
        inspected.contains(&format!("build     release build, vendor key {a}")),
        "{inspected}"
    );
    let err = fails(
        bundle(
            &[
                "verify",
                "release-media",
                "--pubkey",
                &keys().ed_public(),
                "--license-pubkey",
                "vendor-b.pub",
            ],
            d,
        ),
        "verify with another vendor's key",
    );
    assert!(err.contains(a) && err.contains(b), "both key ids: {err}");
}

/// Media with no gateway image: no build record, and verify says so.
fn media_without_a_gateway_has_no_build_record(d: &Path) {
    umoci_image(&d.join("other"), "v1", &[("srv/app", b"not a gateway\n")]);
    let man = manifest(
        d,
        "3.0.0",
        "images:\n  - ref: meshguard/app:3\n    from: oci:other:v1\n",
    );
    ok(
        create(d, &man, "no-gateway", &[]),
        "create without a gateway image",
    );
    assert!(media_json(d, "no-gateway").get("build").is_none());
    let out = verify(d, "no-gateway", &[]);
    assert!(out.contains("no build record"), "{out}");
}

/// A vendor key pair `NAME.key`/`NAME.pub` (meshguard-license); its key id.
fn vendor(d: &Path, name: &str) -> String {
    license_tool(
        d,
        &[
            "keys",
            "generate",
            "--secret",
            &format!("{name}.key"),
            "--public",
            &format!("{name}.pub"),
        ],
    );
    meshguard_license::VendorPublicKey::from_file(&d.join(format!("{name}.pub")))
        .unwrap()
        .key_id()
}

/// A license signed by `vendor`'s key into `out`.
fn license(d: &Path, vendor: &str, out: &str) {
    license_tool(
        d,
        &[
            "issue",
            "--key",
            &format!("{vendor}.key"),
            "--customer",
            "Keyed Media",
            "--mode",
            "air-gapped",
            "--region",
            "enclave-1",
            "--max-agents",
            "5",
            "--valid-for",
            "30d",
            "--out",
            out,
        ],
    );
}

fn license_tool(d: &Path, args: &[&str]) {
    ok(
        Command::new(bin_dir().join("meshguard-license"))
            .args(args)
            .current_dir(d)
            .env("MESHGUARD_LICENSE_PASSPHRASE", LICENSE_PASSPHRASE)
            .output()
            .unwrap(),
        &format!("meshguard-license {}", args[0]),
    );
}

/// `meshguard-bundle images` of this run's binaries into `d/layout` (version 1.0.0); stdout.
fn images(d: &Path, layout: &str, vendor_pubkey: Option<&str>) -> String {
    let bins = bin_dir();
    let mut args = vec![
        "images",
        "--bin-dir",
        bins.to_str().unwrap(),
        "--out",
        layout,
        "--version",
        "1.0.0",
        "--created",
        "1780000000",
    ];
    if let Some(k) = vendor_pubkey {
        args.extend(["--vendor-pubkey", k]);
    }
    ok(bundle(&args, d), &format!("images {layout}"))
}

/// The config labels of the gateway image in `d/layout` (skopeo).
fn labels(d: &Path, layout: &str) -> Value {
    let config: Value = serde_json::from_str(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci:{}:meshguard/gateway:1.0.0", d.join(layout).display()),
    ])))
    .unwrap();
    config["config"]["Labels"].clone()
}

/// The manifest lines naming the gateway image of `layout`, as `meshguard/gateway:VERSION` on
/// the media.
fn gateway_images(layout: &str, version: &str) -> String {
    format!(
        "images:\n  - ref: meshguard/gateway:{version}\n    from: oci:{layout}:meshguard/gateway:1.0.0\n"
    )
}

fn create(d: &Path, man: &Path, out: &str, extra: &[&str]) -> Output {
    let key = keys().ed_secret();
    let mut args = vec![
        "create",
        "--manifest",
        man.to_str().unwrap(),
        "--out",
        out,
        "--key",
        &key,
    ];
    args.extend_from_slice(extra);
    bundle(&args, d)
}

fn media_json(d: &Path, media: &str) -> Value {
    serde_json::from_slice(&std::fs::read(d.join(media).join("MEDIA.json")).unwrap()).unwrap()
}

/// `meshguard-bundle verify` that must pass; its transcript text.
fn verify(d: &Path, media: &str, extra: &[&str]) -> String {
    let key = keys().ed_public();
    let mut args = vec!["verify", media, "--pubkey", &key];
    args.extend_from_slice(extra);
    ok(bundle(&args, d), &format!("verify {media}"))
}
