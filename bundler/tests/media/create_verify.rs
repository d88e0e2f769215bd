//! Media made from real inputs verifies with our tool and with stock tools alone, and imports
//! into a registry, a local directory and a Terraform mirror that `terraform init` uses offline.

use std::path::Path;
use std::process::Command;

use meshguard_license::document::LICENSE_SCHEMA;
use meshguard_license::{DeploymentMode, Entitlements, License, VendorKey};

use crate::support::*;

/// Every input kind the manifest takes, under `dir`; returns the manifest path.
pub(crate) fn full_inputs(
    dir: &Path,
    version: &str,
    recipient: Option<&str>,
) -> std::path::PathBuf {
    umoci_image(
        &dir.join("layout"),
        "v1",
        &[("srv/hello.txt", b"hello from the gateway image\n")],
    );
    let provider = dir.join("terraform-provider-meshguard");
    std::fs::write(
        &provider,
        "#!/bin/sh\necho a stand-in provider binary: init never runs it\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gateway.trivy.json"),
        r#"{"SchemaVersion": 2, "Results": []}"#,
    )
    .unwrap();
    let vendor = VendorKey::generate();
    std::fs::write(dir.join("vendor.pub"), vendor.public().to_pem()).unwrap();
    let now = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let license = License {
        schema: LICENSE_SCHEMA.into(),
        id: "lic_media".into(),
        customer: "ACME".into(),
        edition: "enterprise".into(),
        deployment_mode: DeploymentMode::AirGapped,
        entitlements: Entitlements {
            max_agents: Some(10),
            max_gateways: None,
            features: vec![],
        },
        regions: vec!["*".into()],
        not_before: now,
        expires: now + chrono::Duration::days(3650),
        grace_days: 30,
        sequence: 1,
        issued_at: now,
    }
    .sign(&vendor)
    .unwrap();
    std::fs::write(dir.join("acme.license"), license.envelope.to_json()).unwrap();
    let root = root().display().to_string();
    let recipients = recipient.map_or(String::new(), |r| format!("\n  recipients: [{r}]"));
    manifest(
        dir,
        version,
        &format!(
            "profile: air-gapped
images:
  - ref: meshguard/gateway:{version}
    from: oci:layout:v1
chart: {root}/helm/meshguard-gateway
terraform:
  provider:
    version: 0.1.0
    binaries:
      linux_amd64: terraform-provider-meshguard
  modules: {root}/modules
policies: {root}/examples/policies
license:
  file: acme.license{recipients}
scans: [gateway.trivy.json]
sbom:
  workspace: {root}
  binaries: [meshguard-bundle]
source:
  repository: https://example.invalid/meshguard-deploy
  revision: 0123456789abcdef0123456789abcdef01234567
"
        ),
    )
}

#[test]
fn media_verifies_with_stock_tools_alone_and_imports_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (id, recipient) = site_age_identity(dir);
    let m = full_inputs(dir, "1.4.0", Some(&recipient));
    create_dual_signed(dir, &m);
    let media = dir.join("media");
    our_verifier_passes_every_step(dir);
    the_provenance_names_inputs_not_the_build_host(dir, &media);
    // Stock tools, each on its own.
    sha256sum_and_minisign_verify(&media);
    openssl_and_sigstore_js_verify_the_sigstore_bundle(dir, &media);
    the_sboms_are_valid_cyclonedx(&media);
    skopeo_oci_image_tool_and_helm_read_the_media(&media);
    age_decrypts_the_license(&media, &id);
    let reg = Registry::start();
    let doc = import_into_a_registry(dir, &media, &reg);
    a_second_import_pushes_nothing_new(dir, &reg);
    import_into_a_local_layout(dir);
    terraform_installs_the_provider_offline(dir, &doc);
}

/// A site's age identity; returns (its file, its recipient).
fn site_age_identity(dir: &Path) -> (std::path::PathBuf, String) {
    let id = dir.join("site.age");
    run_ok(Command::new("age-keygen").arg("-o").arg(&id));
    let recipient = run_ok(Command::new("age-keygen").arg("-y").arg(&id))
        .trim()
        .to_owned();
    (id, recipient)
}

/// `create` with both keys (minisign and the sigstore bundle's p256) writes `media`.
fn create_dual_signed(dir: &Path, m: &Path) {
    let k = keys();
    let out = ok(
        bundle(
            &[
                "create",
                "--manifest",
                m.to_str().unwrap(),
                "--out",
                "media",
                "--key",
                &k.ed_secret(),
                "--cosign-key",
                &k.p256_secret(),
            ],
            dir,
        ),
        "create",
    );
    assert!(out.contains("1 image(s)"), "{out}");
}

/// `verify` passes every step and writes its evidence.
fn our_verifier_passes_every_step(dir: &Path) {
    let k = keys();
    let text = ok(
        bundle(
            &[
                "verify",
                "media",
                "--pubkey",
                &k.ed_public(),
                "--cosign-pubkey",
                &k.p256_public(),
                "--license-pubkey",
                "vendor.pub",
                "--transcript",
                "evidence",
            ],
            dir,
        ),
        "verify",
    );
    for step in [
        "signature",
        "sigstore bundle",
        "file hashes",
        "MEDIA.json",
        "OCI layout",
        "provenance",
        "policy bundle",
        "terraform providers",
        "license",
    ] {
        assert!(
            text.contains(&format!("[ OK ] {step}")),
            "{step} missing from:\n{text}"
        );
    }
    let evidence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("evidence.json")).unwrap()).unwrap();
    assert_eq!(evidence["ok"], true);
    assert!(
        std::fs::read_to_string(dir.join("evidence.txt"))
            .unwrap()
            .contains("VERIFIED")
    );
}

/// The provenance names every input by digest, and no path of the build host.
fn the_provenance_names_inputs_not_the_build_host(dir: &Path, media: &Path) {
    let envelope: serde_json::Value = serde_json::from_slice(
        &std::fs::read(media.join("provenance/media.intoto.dsse.json")).unwrap(),
    )
    .unwrap();
    let payload = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap()
    };
    let payload = String::from_utf8(payload).unwrap();
    for host_path in [dir.display().to_string(), root().display().to_string()] {
        assert!(
            !payload.contains(&host_path),
            "the provenance names the build host's {host_path}: {payload}"
        );
    }
    let statement: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let dep = |name: &str| {
        deps.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no input {name} in {deps:?}"))
    };
    assert_eq!(
        dep("source")["digest"]["gitCommit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    for name in [
        "helm chart",
        "terraform modules",
        "policies",
        "meshguard/gateway:1.4.0",
    ] {
        assert_eq!(
            dep(name)["digest"]["sha256"].as_str().map(str::len),
            Some(64),
            "{name}"
        );
    }
}

/// sha256sum checks every file; minisign checks the sums and the policy bundle.
fn sha256sum_and_minisign_verify(media: &Path) {
    let k = keys();
    run_ok(
        Command::new("sha256sum")
            .args(["-c", "--strict", "--quiet", "SHA256SUMS"])
            .current_dir(media),
    );
    run_ok(
        Command::new("minisign")
            .args(["-Vm", "SHA256SUMS", "-p", &k.ed_public()])
            .current_dir(media),
    );
    run_ok(
        Command::new("minisign")
            .args(["-Vm", "policies/policy-bundle.json", "-p", &k.ed_public()])
            .current_dir(media),
    );
}

/// The sigstore bundle's signature verifies with openssl on its own, and the whole bundle with
/// the sigstore project's JS verifier.
fn openssl_and_sigstore_js_verify_the_sigstore_bundle(dir: &Path, media: &Path) {
    let k = keys();
    let bundle_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(media.join("SHA256SUMS.sigstore.json")).unwrap())
            .unwrap();
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            bundle_json["messageSignature"]["signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(dir.join("sums.sig"), sig).unwrap();
    let v = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify", &k.p256_public(), "-signature"])
            .arg(dir.join("sums.sig"))
            .arg(media.join("SHA256SUMS")),
    );
    assert!(v.contains("Verified OK"), "{v}");
    let node = run_ok(
        Command::new("node")
            .arg(verifier("verify-sigstore-bundle.js"))
            .arg(media.join("SHA256SUMS.sigstore.json"))
            .arg(media.join("SHA256SUMS"))
            .arg(k.p256_public())
            .env("NODE_PATH", tools_dir().join("node/node_modules")),
    );
    assert!(node.starts_with("OK"), "{node}");
}

/// Every SBOM is valid CycloneDX 1.6; the image's names env variables, never their values; the
/// binary's lists its crates.
fn the_sboms_are_valid_cyclonedx(media: &Path) {
    let sboms: Vec<String> = walk_files(&media.join("sbom"));
    assert!(sboms.len() >= 3, "{sboms:?}");
    let valid = run_ok(
        Command::new(tools_dir().join("cyclonedx/bin/python"))
            .arg(verifier("validate-cyclonedx.py"))
            .args(&sboms),
    );
    assert_eq!(valid.matches(" 1.6 valid").count(), sboms.len(), "{valid}");
    let image_sbom =
        std::fs::read_to_string(media.join("sbom/images/meshguard_gateway_1.4.0.cdx.json"))
            .unwrap();
    assert!(
        image_sbom.contains("MESHGUARD_SECRET") && !image_sbom.contains("do-not-leak"),
        "env names, never values"
    );
    let bin_sbom =
        std::fs::read_to_string(media.join("sbom/binaries/meshguard-bundle.cdx.json")).unwrap();
    assert!(
        bin_sbom.contains("pkg:cargo/zstd@"),
        "the binary's crates are listed"
    );
}

/// skopeo and oci-image-tool read the image layout; helm lints the chart.
fn skopeo_oci_image_tool_and_helm_read_the_media(media: &Path) {
    let inspect = run_ok(Command::new("skopeo").arg("inspect").arg(format!(
        "oci:{}:meshguard/gateway:1.4.0",
        media.join("images").display()
    )));
    assert!(inspect.contains("\"Digest\""), "{inspect}");
    run_ok(
        Command::new("oci-image-tool")
            .args([
                "validate",
                "--type",
                "image",
                "--ref",
                "name=meshguard/gateway:1.4.0",
            ])
            .arg(media.join("images")),
    );
    run_ok(
        Command::new(tool("helm"))
            .arg("lint")
            .arg(media.join("charts/meshguard-gateway")),
    );
}

/// Stock age decrypts the license with the site's identity.
fn age_decrypts_the_license(media: &Path, id: &Path) {
    let license = run_ok(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(id)
            .arg(media.join("license/acme.license.age")),
    );
    assert!(license.contains("application/vnd.meshguard.license.v1+json"));
}

/// Into a registry: skopeo sees the same digest MEDIA.json records. Returns MEDIA.json.
fn import_into_a_registry(dir: &Path, media: &Path, reg: &Registry) -> serde_json::Value {
    let receipt = ok(
        bundle(
            &[
                "import",
                "media",
                "--pubkey",
                &keys().ed_public(),
                "--registry",
                &reg.addr,
                "--insecure",
                "--dest",
                "site",
                "--terraform-mirror",
                "mirror",
            ],
            dir,
        ),
        "import",
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(media.join("MEDIA.json")).unwrap()).unwrap();
    let digest = doc["images"][0]["digest"].as_str().unwrap();
    assert_eq!(
        reg.digest("meshguard/gateway:1.4.0").as_deref(),
        Some(digest),
        "{receipt}"
    );
    // skopeo reads the media's layout as is and copies it into the registry unchanged.
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!(
                "oci:{}:meshguard/gateway:1.4.0",
                media.join("images").display()
            ))
            .arg(format!("docker://{}/copied/gateway:1.4.0", reg.addr)),
    );
    assert_eq!(reg.digest("copied/gateway:1.4.0").as_deref(), Some(digest));
    assert!(dir.join("site/policies/policy-bundle.json").is_file());
    assert!(
        dir.join("site/charts/meshguard-gateway/Chart.yaml")
            .is_file()
    );
    doc
}

/// A second import pushes nothing new.
fn a_second_import_pushes_nothing_new(dir: &Path, reg: &Registry) {
    let again = ok(
        bundle(
            &[
                "import",
                "media",
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
        "import again",
    );
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["push"]["blobsPushed"], 0, "{again}");
    assert!(
        again["push"]["blobsSkipped"].as_u64().unwrap() >= 2,
        "{again}"
    );
}

/// The embedded default: a local OCI layout skopeo reads.
fn import_into_a_local_layout(dir: &Path) {
    ok(
        bundle(
            &[
                "import",
                "media",
                "--pubkey",
                &keys().ed_public(),
                "--dest",
                "local",
            ],
            dir,
        ),
        "import to a directory",
    );
    run_ok(Command::new("skopeo").arg("inspect").arg(format!(
        "oci:{}:meshguard/gateway:1.4.0",
        dir.join("local/images").display()
    )));
}

/// Terraform installs the provider from the imported mirror with no network at all, and its
/// lock file records the h1: MEDIA.json carries.
fn terraform_installs_the_provider_offline(dir: &Path, doc: &serde_json::Value) {
    let tf = dir.join("tf");
    std::fs::create_dir_all(&tf).unwrap();
    std::fs::write(
        tf.join("main.tf"),
        "terraform {\n  required_providers {\n    meshguard = { source = \"registry.terraform.io/meshguard/meshguard\", version = \"0.1.0\" }\n  }\n}\n",
    )
    .unwrap();
    let init = run(Command::new("unshare")
        .arg("-n")
        .arg(tool("terraform"))
        .args([
            "init",
            "-no-color",
            &format!("-plugin-dir={}", dir.join("mirror").display()),
        ])
        .current_dir(&tf)
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", "/dev/null")
        .env("TF_IN_AUTOMATION", "1"));
    let said = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "terraform init: {said}{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(
        said.contains("Installed meshguard/meshguard v0.1.0"),
        "{said}"
    );
    let lock = std::fs::read_to_string(tf.join(".terraform.lock.hcl")).unwrap();
    let h1 = doc["providers"][0]["h1"].as_str().unwrap();
    assert!(
        lock.contains(h1),
        "the lock file records the h1: MEDIA.json carries\n{lock}"
    );
}

pub(crate) fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn manifest_errors_name_the_line() {
    let t = tempfile::tempdir().unwrap();
    let k = keys();
    // `create` of the manifest at `m`, which must fail: what it printed.
    let create = |m: &std::path::Path| {
        fails(
            bundle(
                &[
                    "create",
                    "--manifest",
                    m.to_str().unwrap(),
                    "--out",
                    "o",
                    "--key",
                    &k.ed_secret(),
                ],
                t.path(),
            ),
            "create",
        )
    };
    let m = manifest(
        t.path(),
        "1.0.0",
        "images:\n  - ref: a/b:1\n    form: oci:x:1\n",
    );
    let err = create(&m);
    assert!(
        err.contains("media-1.0.0.yaml:6:") && err.contains("Unknown field `form`"),
        "{err}"
    );
    let m = manifest(t.path(), "1.0.1", "policies: no/such/dir\n");
    let err = create(&m);
    assert!(
        err.contains("media-1.0.1.yaml:4:") && err.contains("no/such/dir does not exist"),
        "{err}"
    );
    assert!(!t.path().join("o").exists(), "nothing is left behind");
    // A policy the gateway would refuse: every problem named with its file and line, no media.
    let dir = t.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.yaml"),
        "name: good\nrules:\n  - name: r\n    effect: allow\n    actions: ['read:*']\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "name: bad\nrules:\n  - name: r\n    effect: permit\n    actions: ['read:*']\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.yaml"), "name: [unclosed\n").unwrap();
    let m = manifest(t.path(), "1.0.2", "policies: policies\n");
    let err = create(&m);
    assert!(
        err.contains("the gateway would refuse these policies"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:4") && err.contains("permit"),
        "{err}"
    );
    assert!(err.contains("broken.yaml"), "{err}");
    assert!(!err.contains("good.yaml"), "{err}");
    assert!(!t.path().join("o").exists(), "nothing is left behind");
}
