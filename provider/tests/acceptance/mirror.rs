//! The packed mirror: Terraform computes the same `h1:` offline, coreutils agrees with `zh:` and
//! the SHA256SUMS, and Terraform refuses a changed binary.

use crate::harness::{Gateway, TERRAFORMS, Workdir, mirror};

#[test]
fn terraform_lock_from_the_mirror_matches_our_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
    wd.write("main.tf", "terraform {\n  required_providers {\n    meshguard = { source = \"registry.terraform.io/meshguard/meshguard\" }\n  }\n}\n");
    let (dir, packed) = mirror();
    let lock = wd.run(&[
        "providers",
        "lock",
        "-no-color",
        &format!("-fs-mirror={}", dir.path().display()),
        "-platform=linux_amd64",
    ]);
    assert_eq!(lock.code, 0, "{}", lock.all());
    let lockfile = std::fs::read_to_string(wd.dir.join(".terraform.lock.hcl")).unwrap();
    assert!(
        lockfile.contains(&format!("\"{}\"", packed.h1)),
        "{lockfile}\nexpected {}",
        packed.h1
    );
    // Terraform records `zh:` only from a registry's signed checksums, so check it with coreutils.
    let zip_dir = packed.zip.parent().unwrap();
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "terraform-provider-meshguard_0.1.0_SHA256SUMS"])
        .current_dir(zip_dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let sum = std::process::Command::new("sha256sum")
        .arg(&packed.zip)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(packed.zh, format!("zh:{hex}"));
}

#[test]
fn a_changed_provider_binary_fails_against_the_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(tmp.path());
    let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
    wd.write(
        "main.tf",
        &format!(
            "terraform {{\n  required_providers {{\n    meshguard = {{ source = \"registry.terraform.io/meshguard/meshguard\" }}\n  }}\n}}\nprovider \"meshguard\" {{\n  gateway_url = \"{}\"\n}}\ndata \"meshguard_policies\" \"all\" {{}}\n",
            gw.base
        ),
    );
    wd.init_offline().ok();
    wd.run(&["plan", "-no-color"]).ok();
    let installed =
        std::fs::read_dir(wd.dir.join(
            ".terraform/providers/registry.terraform.io/meshguard/meshguard/0.1.0/linux_amd64",
        ))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&installed).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&installed, bytes).unwrap();
    let plan = wd.run(&["plan", "-no-color"]);
    assert_ne!(plan.code, 0);
    assert!(
        plan.all().contains("the cached package") || plan.all().contains("does not match"),
        "{}",
        plan.all()
    );
}
