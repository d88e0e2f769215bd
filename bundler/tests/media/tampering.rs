//! Hostile media: every kind of change is caught, named by file and check, and import then
//! refuses before touching the registry.

use std::path::{Path, PathBuf};

use crate::support::*;

fn small_media(dir: &Path, version: &str) -> PathBuf {
    let layout = dir.join("layout");
    if !layout.exists() {
        umoci_image(&layout, "v1", &[("etc/motd", b"tamper test\n")]);
        std::fs::write(dir.join("scan.json"), b"{\"results\": []}\n").unwrap();
    }
    let root = root().display().to_string();
    let m = manifest(
        dir,
        version,
        &format!(
            "images:\n  - ref: meshguard/t:{version}\n    from: oci:layout:v1\npolicies: {root}/examples/policies\nchart: {root}/helm/meshguard-gateway\nscans: [scan.json]\n"
        ),
    );
    let out = format!("media-{version}");
    ok(
        bundle(
            &[
                "create",
                "--manifest",
                m.to_str().unwrap(),
                "--out",
                &out,
                "--key",
                &keys().ed_secret(),
            ],
            dir,
        ),
        "create",
    );
    dir.join(out)
}

fn verify_err(media: &Path) -> String {
    fails(
        bundle(
            &[
                "verify",
                media.to_str().unwrap(),
                "--pubkey",
                &keys().ed_public(),
            ],
            media.parent().unwrap(),
        ),
        "verify of tampered media",
    )
}

#[test]
fn a_byte_flipped_in_any_file_is_named() {
    let t = tempfile::tempdir().unwrap();
    let media = small_media(t.path(), "2.0.0");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(media.join("MEDIA.json")).unwrap()).unwrap();
    let blob = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "oci-blob")
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<(&str, String)> = vec![
        (
            "SHA256SUMS",
            "SHA256SUMS does not match its signature".into(),
        ),
        ("SHA256SUMS.minisig", "SHA256SUMS".into()),
        ("MEDIA.json", "MEDIA.json does not match SHA256SUMS".into()),
        ("VERIFY.txt", "VERIFY.txt does not match SHA256SUMS".into()),
        (
            "images/index.json",
            "images/index.json does not match SHA256SUMS".into(),
        ),
        (
            "images/oci-layout",
            "images/oci-layout does not match SHA256SUMS".into(),
        ),
        (blob.as_str(), format!("{blob} does not match SHA256SUMS")),
        (
            "policies/policy-bundle.json",
            "policies/policy-bundle.json does not match SHA256SUMS".into(),
        ),
        (
            "policies/policy-bundle.json.minisig",
            "policies/policy-bundle.json.minisig does not match SHA256SUMS".into(),
        ),
        (
            "sbom/media.cdx.json",
            "sbom/media.cdx.json does not match SHA256SUMS".into(),
        ),
        (
            "provenance/media.intoto.dsse.json",
            "provenance/media.intoto.dsse.json does not match SHA256SUMS".into(),
        ),
        (
            "scans/scan.json",
            "scans/scan.json does not match SHA256SUMS".into(),
        ),
        (
            "charts/meshguard-gateway/values.yaml",
            "charts/meshguard-gateway/values.yaml does not match SHA256SUMS".into(),
        ),
    ];
    for (i, (file, expect)) in cases.iter().enumerate() {
        let copy = t.path().join(format!("case-{i}"));
        copy_dir(&media, &copy);
        flip_byte(&copy.join(file));
        let err = verify_err(&copy);
        assert!(
            err.contains(expect.as_str()),
            "flipping {file}: expected {expect:?} in\n{err}"
        );
        assert!(err.contains("REJECTED"), "{err}");
    }
}

#[test]
fn deleted_added_swapped_and_replayed_files_are_caught_and_import_refuses() {
    let t = tempfile::tempdir().unwrap();
    let old = small_media(t.path(), "3.0.0");
    let media = small_media(t.path(), "3.0.1");
    a_deleted_file_is_caught(t.path(), &media);
    an_added_file_is_caught(t.path(), &media);
    a_signature_from_other_media_is_caught(t.path(), &old, &media);
    an_older_sums_replayed_onto_newer_media_is_caught(t.path(), &old, &media);
    another_key_entirely_is_refused(t.path(), &media);
    an_older_media_handed_over_as_the_new_one_is_refused(t.path(), &old);
    import_of_tampered_media_sends_nothing(t.path(), &media);
}

/// A copy of `media` under `dir/name`, to be tampered with.
fn copy_of(dir: &Path, media: &Path, name: &str) -> PathBuf {
    let copy = dir.join(name);
    copy_dir(media, &copy);
    copy
}

/// A file listed in SHA256SUMS and deleted from the media is named.
fn a_deleted_file_is_caught(dir: &Path, media: &Path) {
    let copy = copy_of(dir, media, "deleted");
    std::fs::remove_file(copy.join("scans/scan.json")).unwrap();
    assert!(verify_err(&copy).contains("scans/scan.json is listed in SHA256SUMS but missing"));
}

/// A file added to the media and not in SHA256SUMS is named.
fn an_added_file_is_caught(dir: &Path, media: &Path) {
    let copy = copy_of(dir, media, "added");
    std::fs::write(copy.join("charts/extra.sh"), b"#!/bin/sh\n").unwrap();
    assert!(verify_err(&copy).contains("charts/extra.sh is on the media but not in SHA256SUMS"));
}

/// A signature from other media, by the same key.
fn a_signature_from_other_media_is_caught(dir: &Path, old: &Path, media: &Path) {
    let copy = copy_of(dir, media, "swapped");
    std::fs::copy(
        old.join("SHA256SUMS.minisig"),
        copy.join("SHA256SUMS.minisig"),
    )
    .unwrap();
    assert!(verify_err(&copy).contains("SHA256SUMS does not match its signature"));
}

/// An older, validly signed SHA256SUMS and its signature replayed onto newer media.
fn an_older_sums_replayed_onto_newer_media_is_caught(dir: &Path, old: &Path, media: &Path) {
    let copy = copy_of(dir, media, "replayed");
    for f in ["SHA256SUMS", "SHA256SUMS.minisig"] {
        std::fs::copy(old.join(f), copy.join(f)).unwrap();
    }
    let err = verify_err(&copy);
    assert!(
        err.contains("does not match SHA256SUMS") || err.contains("not in SHA256SUMS"),
        "{err}"
    );
}

/// Another key entirely.
fn another_key_entirely_is_refused(dir: &Path, media: &Path) {
    let other = dir.join("other-keys");
    std::fs::create_dir_all(&other).unwrap();
    ok(
        bundle(
            &["keys", "generate", "--secret", "o.key", "--public", "o.pub"],
            &other,
        ),
        "keys",
    );
    let err = fails(
        bundle(
            &[
                "verify",
                media.to_str().unwrap(),
                "--pubkey",
                other.join("o.pub").to_str().unwrap(),
            ],
            dir,
        ),
        "verify with another key",
    );
    assert!(err.contains("not by the trusted key"), "{err}");
}

/// A whole older media handed over as the new one.
fn an_older_media_handed_over_as_the_new_one_is_refused(dir: &Path, old: &Path) {
    let err = fails(
        bundle(
            &[
                "verify",
                old.to_str().unwrap(),
                "--pubkey",
                &keys().ed_public(),
                "--expect-version",
                "3.0.1",
            ],
            dir,
        ),
        "verify",
    );
    assert!(err.contains("not the expected version 3.0.1"), "{err}");
}

/// Import verifies first: the registry receives nothing from tampered media.
fn import_of_tampered_media_sends_nothing(dir: &Path, media: &Path) {
    let reg = Registry::start();
    let copy = copy_of(dir, media, "import-tampered");
    let blob = std::fs::read_dir(copy.join("images/blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flip_byte(&blob);
    let err = fails(
        bundle(
            &[
                "import",
                copy.to_str().unwrap(),
                "--pubkey",
                &keys().ed_public(),
                "--registry",
                &reg.addr,
                "--insecure",
                "--dest",
                "site",
            ],
            dir,
        ),
        "import",
    );
    assert!(err.contains("import refused"), "{err}");
    assert_eq!(
        reg.digest("meshguard/t:3.0.1"),
        None,
        "nothing reached the registry"
    );
    assert!(!dir.join("site/policies").exists(), "nothing was written");
}
