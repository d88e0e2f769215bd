//! A registry as sites run it: distribution with htpasswd users behind TLS from a private CA
//! (made by openssl here). Media are made from it and imported into it with the credentials
//! `podman login` writes (an auth file) and the site CA (`--ca-bundle`); a missing credential,
//! a wrong password and an unknown CA are each refused with what to do.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;

use crate::support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem`/`ca.key` and the registry's `registry.pem`/`registry.key` for 127.0.0.1.
fn pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=site-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut leaf = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=registry",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ];
    leaf.extend(ec);
    leaf.extend(["-keyout", "registry.key", "-out", "registry.pem"]);
    openssl(dir, &leaf);
}

/// An auth file as `podman login` writes it.
fn auth_file(path: &Path, registry: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        path,
        serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

/// meshguard-bundle with a clean credential environment: no auth file but what `env` names.
fn bundle_as(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(bundle_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env("HOME", cwd.join("home"))
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("meshguard-bundle runs")
}

#[test]
fn media_are_made_from_and_imported_into_a_registry_with_htpasswd_users_behind_a_private_ca() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    std::fs::create_dir(dir.join("home")).unwrap();
    pki(dir);
    let htpasswd = run_ok(Command::new("htpasswd").args(["-Bbn", "mirror", "s3cret-pass"]));
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
    let reg = Registry::start_secured(
        &dir.join("htpasswd"),
        &dir.join("registry.pem"),
        &dir.join("registry.key"),
        &dir.join("ca.pem"),
    );
    // skopeo's certificate directory: the CA as ca.crt.
    std::fs::create_dir(dir.join("certs")).unwrap();
    std::fs::copy(dir.join("ca.pem"), dir.join("certs/ca.crt")).unwrap();
    let skopeo_tls = format!("--cert-dir={}", dir.join("certs").display());

    umoci_image(
        &dir.join("layout"),
        "v1",
        &[("srv/app", b"behind the site CA\n")],
    );
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                &format!("--dest-{}", &skopeo_tls[2..]),
                "--dest-creds=mirror:s3cret-pass",
            ])
            .arg(format!("oci:{}:v1", dir.join("layout").display()))
            .arg(format!("docker://{}/src/app:v1", reg.addr)),
    );
    auth_file(&dir.join("auth.json"), &reg.addr, "mirror", "s3cret-pass");
    auth_file(
        &dir.join("wrong.json"),
        &reg.addr,
        "mirror",
        "not-the-password",
    );
    let man = manifest(
        dir,
        "8.0.0",
        &format!(
            "images:\n  - ref: meshguard/app:8\n    from: docker://{}/src/app:v1\n",
            reg.addr
        ),
    );
    let key = keys().ed_secret();
    let create = |out: &str, extra: &[&str], env: &[(&str, &Path)]| {
        let mut args = vec![
            "create",
            "--manifest",
            man.to_str().unwrap(),
            "--out",
            out,
            "--key",
            &key,
        ];
        args.extend(extra);
        bundle_as(&args, dir, env)
    };

    // Pull: credentials and the site CA are both needed, and each is named when missing.
    let err = fails(
        create("m", &["--ca-bundle", "ca.pem"], &[]),
        "create without credentials",
    );
    assert!(
        err.contains("wants credentials") && err.contains("REGISTRY_AUTH_FILE"),
        "{err}"
    );
    let err = fails(
        create("m", &["--authfile", "auth.json"], &[]),
        "create without the site CA",
    );
    assert!(
        err.contains("--ca-bundle"),
        "the unknown CA is named: {err}"
    );
    assert!(!dir.join("m").exists(), "no media is left looking complete");
    ok(
        create(
            "m",
            &["--ca-bundle", "ca.pem", "--authfile", "auth.json"],
            &[],
        ),
        "create with the auth file and the CA",
    );
    let pubkey = keys().ed_public();
    ok(bundle(&["verify", "m", "--pubkey", &pubkey], dir), "verify");

    // Push: the auth file found through REGISTRY_AUTH_FILE, as podman and skopeo find it.
    let import = |env: &[(&str, &Path)], extra: &[&str]| {
        let mut args = vec![
            "import",
            "m",
            "--pubkey",
            &pubkey,
            "--registry",
            &reg.addr,
            "--dest",
            "site",
        ];
        args.extend(extra);
        bundle_as(&args, dir, env)
    };
    let err = fails(
        import(&[], &["--ca-bundle", "ca.pem"]),
        "import without credentials",
    );
    assert!(err.contains("podman login"), "{err}");
    let wrong = dir.join("wrong.json");
    let err = fails(
        import(
            &[("REGISTRY_AUTH_FILE", &wrong)],
            &["--ca-bundle", "ca.pem"],
        ),
        "import with a wrong password",
    );
    assert!(
        err.contains("refused the credentials of \"mirror\""),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password"),
        "the password is never printed: {err}"
    );
    let auth = dir.join("auth.json");
    let err = fails(
        import(&[("REGISTRY_AUTH_FILE", &auth)], &[]),
        "import without the CA",
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    ok(
        import(&[("REGISTRY_AUTH_FILE", &auth)], &["--ca-bundle", "ca.pem"]),
        "import with credentials and the CA",
    );

    // What the registry holds is what the media carry, read back by skopeo.
    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", &skopeo_tls, "--creds=mirror:s3cret-pass"])
            .arg(format!("docker://{}/meshguard/app:8", reg.addr)),
    );
    let pushed: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let media: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("m/MEDIA.json")).unwrap()).unwrap();
    let carried = media["images"][0]["digest"].as_str().unwrap();
    assert_eq!(pushed["Digest"].as_str(), Some(carried));
}
