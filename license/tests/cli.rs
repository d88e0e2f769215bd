//! `meshguard-license` end to end, with the stock `age` and `age-keygen` on the other side of
//! the gap. Every run uses its own temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const PASSPHRASE: &str = "vendor passphrase for tests";

struct Gap {
    dir: tempfile::TempDir,
}

impl Gap {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn site(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }

    /// Runs the tool; the vendor passphrase is in the environment, never on the command line.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_meshguard-license"))
            .args(args)
            .current_dir(self.dir.path())
            .env("MESHGUARD_LICENSE_PASSPHRASE", PASSPHRASE)
            .env_remove("LICENSE_DIR")
            .env_remove("LICENSE_PUBKEY")
            .env_remove("DEPLOYMENT_MODE")
            .env_remove("REGION")
            .output()
            .expect("meshguard-license runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "meshguard-license {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "meshguard-license {args:?} succeeded but should not have:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn vendor_keys(&self) {
        self.ok(&[
            "keys",
            "generate",
            "--secret",
            "vendor.key",
            "--public",
            "vendor.pub",
            "--work-factor",
            "10",
        ]);
    }

    /// A stock `age-keygen` identity; returns its recipient.
    fn age_keygen(&self, name: &str) -> String {
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(self.p(name))
            .output()
            .expect("age-keygen is installed (apt age)");
        assert!(out.status.success());
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(self.p(name))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn issue(&self, out: &str, extra: &[&str]) {
        let mut args = vec![
            "issue",
            "--key",
            "vendor.key",
            "--customer",
            "ACME Defence",
            "--mode",
            "air-gapped",
            "--region",
            "eu-west",
            "--max-agents",
            "5",
            "--out",
            out,
        ];
        if !extra.contains(&"--id") {
            args.extend(["--id", "lic_test"]);
        }
        if !extra
            .iter()
            .any(|a| *a == "--expires" || *a == "--valid-for")
        {
            args.extend(["--valid-for", "365d"]);
        }
        args.extend(extra);
        self.ok(&args);
    }

    /// request → activate → install at `site`, all in clear.
    fn activate(&self, site: &str, license: &str) {
        let site = self.site(site);
        self.ok(&[
            "request",
            "--data-dir",
            &site,
            "--pubkey",
            "vendor.pub",
            "--license",
            license,
            "--out",
            "req.json",
        ]);
        self.ok(&[
            "activate",
            "--key",
            "vendor.key",
            "--license",
            license,
            "--request",
            "req.json",
            "--out",
            "act.json",
        ]);
        self.ok(&[
            "install",
            "--data-dir",
            &site,
            "--pubkey",
            "vendor.pub",
            "--license",
            license,
            "--activation",
            "act.json",
        ]);
    }

    fn status_json(&self, site: &str) -> serde_json::Value {
        let out = self.run(&[
            "status",
            "--data-dir",
            &self.site(site),
            "--pubkey",
            "vendor.pub",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn activation_and_renewal_cross_the_gap_encrypted_with_stock_age_on_both_sides() {
    let g = Gap::new();
    g.vendor_keys();
    let vendor_r = g.age_keygen("vendor.age");
    let site = g.site("site");
    let site_r = g.ok(&["site-key", "--data-dir", &site]).trim().to_owned();
    assert!(site_r.starts_with("age1"), "{site_r}");
    the_license_crosses_encrypted_to_the_site(&g, &site_r);
    the_request_crosses_encrypted_with_stock_age(&g, &site, &vendor_r);
    the_vendor_activates_encrypted_to_the_site(&g, &site_r);
    the_site_installs_the_activated_license(&g, &site);
    a_renewal_installs_with_no_new_activation(&g, &site);
    the_old_license_is_then_a_replay(&g, &site);
    // Installing the same renewal again is harmless.
    let out = g.ok(&[
        "install",
        "--data-dir",
        &site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "renewal.json",
    ]);
    assert!(out.contains("already installed"), "{out}");
}

/// Vendor → site: the license, encrypted to the site; stock age can open it there.
fn the_license_crosses_encrypted_to_the_site(g: &Gap, site_r: &str) {
    g.issue("lic.age", &["--encrypt-to", site_r]);
    let clear = age_decrypt(&g.p("site/site.agekey"), &g.p("lic.age"));
    assert!(String::from_utf8_lossy(&clear).contains("application/vnd.meshguard.license.v1+json"));
}

/// Site → vendor: the request in clear, then encrypted with the stock age tool.
fn the_request_crosses_encrypted_with_stock_age(g: &Gap, site: &str, vendor_r: &str) {
    g.ok(&[
        "request",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.age",
        "--out",
        "req.json",
    ]);
    let st = Command::new("age")
        .args(["-a", "-r", vendor_r, "-o"])
        .arg(g.p("req.age"))
        .arg(g.p("req.json"))
        .status()
        .unwrap();
    assert!(st.success());
}

/// Vendor: opens the stock-age file with its identity, answers encrypted to the site.
fn the_vendor_activates_encrypted_to_the_site(g: &Gap, site_r: &str) {
    g.ok(&[
        "activate",
        "--key",
        "vendor.key",
        "--license",
        "lic.age",
        "--identity",
        "vendor.age",
        "--identity",
        "site/site.agekey",
        "--request",
        "req.age",
        "--out",
        "act.age",
        "--encrypt-to",
        site_r,
    ]);
    let act = age_decrypt(&g.p("site/site.agekey"), &g.p("act.age"));
    assert!(String::from_utf8_lossy(&act).contains("application/vnd.meshguard.activation.v1+json"));
}

/// The site installs the encrypted license with its encrypted activation: valid, sequence 1.
fn the_site_installs_the_activated_license(g: &Gap, site: &str) {
    let out = g.ok(&[
        "install",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.age",
        "--activation",
        "act.age",
    ]);
    assert!(
        out.contains("installed license lic_test (sequence 1)"),
        "{out}"
    );
    let s = g.status_json("site");
    assert_eq!(s["state"], "valid");
    assert_eq!(s["maxAgents"], 5);
    assert_eq!(s["sequence"], 1);
}

/// A renewal installs with no new activation.
fn a_renewal_installs_with_no_new_activation(g: &Gap, site: &str) {
    g.ok(&[
        "renew",
        "--key",
        "vendor.key",
        "--license",
        "lic.age",
        "--identity",
        "site/site.agekey",
        "--extend",
        "365d",
        "--max-agents",
        "9",
        "--out",
        "renewal.json",
    ]);
    let out = g.ok(&[
        "install",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "renewal.json",
    ]);
    assert!(out.contains("sequence 1 -> 2"), "{out}");
    let s = g.status_json("site");
    assert_eq!(s["sequence"], 2);
    assert_eq!(s["maxAgents"], 9);
}

/// After the renewal the old license is a replay, refused, and the refusal changes nothing.
fn the_old_license_is_then_a_replay(g: &Gap, site: &str) {
    let err = g.fails(&[
        "install",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.age",
        "--activation",
        "act.age",
    ]);
    assert!(
        err.contains("sequence 1 is older than the installed sequence 2"),
        "{err}"
    );
    assert_eq!(
        g.status_json("site")["sequence"],
        2,
        "a refused install changes nothing"
    );
}

#[test]
fn a_changed_field_or_another_vendor_key_is_refused() {
    let g = Gap::new();
    g.vendor_keys();
    g.issue("lic.json", &[]);
    a_changed_field_breaks_the_signature(&g);
    a_license_signed_by_another_key_is_refused(&g);
    a_wrong_passphrase_names_the_key_file_and_nothing_else(&g);
}

/// Raise maxAgents in the signed payload, keep the signature: verify refuses it.
fn a_changed_field_breaks_the_signature(g: &Gap) {
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.p("lic.json")).unwrap()).unwrap();
    let payload = STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let changed = String::from_utf8(payload)
        .unwrap()
        .replace("\"maxAgents\":5", "\"maxAgents\":500");
    assert!(changed.contains("500"));
    env["payload"] = STANDARD.encode(changed).into();
    std::fs::write(g.p("tampered.json"), env.to_string()).unwrap();
    let err = g.fails(&[
        "verify",
        "--pubkey",
        "vendor.pub",
        "--license",
        "tampered.json",
    ]);
    assert!(
        err.contains("the signature does not match the content"),
        "{err}"
    );
}

/// A license signed by someone else's key.
fn a_license_signed_by_another_key_is_refused(g: &Gap) {
    g.ok(&[
        "keys",
        "generate",
        "--secret",
        "other.key",
        "--public",
        "other.pub",
        "--work-factor",
        "10",
    ]);
    g.ok(&[
        "issue",
        "--key",
        "other.key",
        "--customer",
        "X",
        "--mode",
        "air-gapped",
        "--region",
        "*",
        "--valid-for",
        "30d",
        "--out",
        "forged.json",
    ]);
    let err = g.fails(&[
        "verify",
        "--pubkey",
        "vendor.pub",
        "--license",
        "forged.json",
    ]);
    assert!(err.contains("not by the configured key"), "{err}");
}

/// A wrong passphrase names the key file and nothing else.
fn a_wrong_passphrase_names_the_key_file_and_nothing_else(g: &Gap) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshguard-license"))
        .current_dir(g.dir.path())
        .env("MESHGUARD_LICENSE_PASSPHRASE", "not it")
        .args([
            "issue",
            "--key",
            "vendor.key",
            "--customer",
            "X",
            "--mode",
            "air-gapped",
        ])
        .args(["--region", "*", "--valid-for", "1d"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("wrong passphrase for vendor.key"), "{err}");
    assert!(
        !err.contains("not it"),
        "the passphrase must not be echoed: {err}"
    );
}

#[test]
fn an_activation_works_only_for_the_request_and_installation_it_answers() {
    let g = Gap::new();
    g.vendor_keys();
    g.issue("lic.json", &[]);
    let (a, b) = (g.site("site-a"), g.site("site-b"));
    // Site A asks; its activation is carried to site B.
    request(&g, &a, "req-a.json");
    g.ok(&[
        "activate",
        "--key",
        "vendor.key",
        "--license",
        "lic.json",
        "--request",
        "req-a.json",
        "--out",
        "act-a.json",
    ]);
    request(&g, &b, "req-b.json");
    let err = g.fails(&install_args(&b, Some("act-a.json")));
    assert!(err.contains("was made for installation inst_"), "{err}");
    assert_eq!(g.status_json("site-b")["state"], "missing");
    // Site A makes a newer request: the activation of the older one is now stale.
    request(&g, &a, "req-a2.json");
    let err = g.fails(&install_args(&a, Some("act-a.json")));
    assert!(
        err.contains("not this installation's pending request"),
        "{err}"
    );
    // Without any activation the license cannot be installed.
    let err = g.fails(&install_args(&a, None));
    assert!(
        err.contains("is not activated on this installation"),
        "{err}"
    );
}

/// `request` for `lic.json` at `site`, written to `out`.
fn request(g: &Gap, site: &str, out: &str) {
    g.ok(&[
        "request",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.json",
        "--out",
        out,
    ]);
}

/// The arguments of `install` of `lic.json` at `site`, with `activation` if given.
fn install_args<'a>(site: &'a str, activation: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "install",
        "--data-dir",
        site,
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.json",
    ];
    if let Some(act) = activation {
        args.extend(["--activation", act]);
    }
    args
}

#[test]
fn expired_not_yet_valid_and_wrong_deployment_are_refused() {
    let g = Gap::new();
    g.vendor_keys();
    an_expired_license_is_refused(&g);
    a_license_not_yet_valid_is_refused(&g);
    // The license is for air-gapped in eu-west.
    g.issue("lic.json", &[]);
    another_deployment_mode_is_refused(&g);
    g.activate("ok", "lic.json");
    another_region_is_refused(&g);
}

/// request → activate in clear at site `s`, then an install that must fail; returns its error.
fn activate_then_install_fails(g: &Gap, license: &str) -> String {
    g.ok(&[
        "request",
        "--data-dir",
        &g.site("s"),
        "--pubkey",
        "vendor.pub",
        "--license",
        license,
        "--out",
        "r.json",
    ]);
    g.ok(&[
        "activate",
        "--key",
        "vendor.key",
        "--license",
        license,
        "--request",
        "r.json",
        "--out",
        "a.json",
    ]);
    g.fails(&[
        "install",
        "--data-dir",
        &g.site("s"),
        "--pubkey",
        "vendor.pub",
        "--license",
        license,
        "--activation",
        "a.json",
    ])
}

/// A license past its expiry and grace: `verify` says expired and `install` refuses it.
fn an_expired_license_is_refused(g: &Gap) {
    g.issue(
        "old.json",
        &[
            "--id",
            "lic_old",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--expires",
            "2021-01-01T00:00:00Z",
            "--grace-days",
            "10",
        ],
    );
    let out = g.run(&["verify", "--pubkey", "vendor.pub", "--license", "old.json"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state: expired"), "{text}");
    let err = activate_then_install_fails(g, "old.json");
    assert!(err.contains("expired on 2021-01-01T00:00:00Z"), "{err}");
}

/// A license whose not-before is in the future: `install` refuses it.
fn a_license_not_yet_valid_is_refused(g: &Gap) {
    g.issue(
        "future.json",
        &[
            "--id",
            "lic_future",
            "--not-before",
            "2099-01-01T00:00:00Z",
            "--expires",
            "2100-01-01T00:00:00Z",
        ],
    );
    let err = activate_then_install_fails(g, "future.json");
    assert!(
        err.contains("is not valid before 2099-01-01T00:00:00Z"),
        "{err}"
    );
}

/// An air-gapped license is refused by a site in another deployment mode.
fn another_deployment_mode_is_refused(g: &Gap) {
    let err = g.fails(&[
        "request",
        "--data-dir",
        &g.site("k8s"),
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.json",
        "--mode",
        "on-prem-kubernetes",
    ]);
    assert!(err.contains("is for deployment mode air-gapped"), "{err}");
}

/// An eu-west license is refused by install and status in another region, and stays valid.
fn another_region_is_refused(g: &Gap) {
    let err = g.fails(&[
        "install",
        "--data-dir",
        &g.site("ok"),
        "--pubkey",
        "vendor.pub",
        "--license",
        "lic.json",
        "--region",
        "us-east",
    ]);
    assert!(
        err.contains("allows regions [eu-west], not us-east"),
        "{err}"
    );
    let s = g.run(&[
        "status",
        "--data-dir",
        &g.site("ok"),
        "--pubkey",
        "vendor.pub",
        "--region",
        "us-east",
    ]);
    assert!(
        !s.status.success(),
        "a license for another region is not valid here"
    );
    assert_eq!(g.status_json("ok")["state"], "valid");
}
