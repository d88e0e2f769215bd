//! A gateway behind a private CA that requires a client certificate for its admin API: the
//! provider trusts the CA (`ca_cert_file`) and presents the operator's certificate
//! (`client_cert_file`, `client_key_file`); without the certificate Terraform says why.

use std::path::Path;
use std::process::Command;

use crate::harness::{Gateway, TERRAFORMS, Workdir};

/// `openssl req` with `args` in `dir`, which must succeed.
fn openssl_req(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .arg("req")
        .args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CA `NAME.pem`/`NAME.key`.
fn ca(dir: &Path, name: &str) {
    let subj = format!("/CN={name}");
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl_req(
        dir,
        &["-x509", "-subj", &subj, "-keyout", &key, "-out", &pem],
    );
}

/// A leaf `NAME.pem`/`NAME.key` issued by `ca` with the extension `ext` (OpenSSL 3 signs it
/// in one `req -x509 -CA` step).
fn leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    let subj = format!("/CN={name}");
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl_req(
        dir,
        &[
            "-x509",
            "-subj",
            &subj,
            "-keyout",
            &key,
            "-out",
            &pem,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-addext",
            ext,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
}

fn provider_block(base: &str, pki: &Path, with_cert: bool) -> String {
    let ca = pki.join("site-ca.pem").display().to_string();
    let cert = if with_cert {
        format!(
            "  client_cert_file = \"{}\"\n  client_key_file  = \"{}\"\n",
            pki.join("operator.pem").display(),
            pki.join("operator.key").display()
        )
    } else {
        String::new()
    };
    format!(
        "terraform {{\n  required_providers {{\n    meshguard = {{ source = \"registry.terraform.io/meshguard/meshguard\" }}\n  }}\n}}\n\nprovider \"meshguard\" {{\n  gateway_url  = \"{base}\"\n  ca_cert_file = \"{ca}\"\n{cert}}}\n\nresource \"meshguard_agent\" \"ops\" {{\n  name = \"ops-bot\"\n}}\n"
    )
}

#[test]
fn over_mutual_tls_the_provider_trusts_the_site_ca_and_presents_the_operators_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    ca(&pki, "site-ca");
    leaf(&pki, "site-ca", "gateway", "subjectAltName=IP:127.0.0.1");
    ca(&pki, "admin-ca");
    leaf(&pki, "admin-ca", "operator", "extendedKeyUsage=clientAuth");
    let ready = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.join("site-ca.pem")).unwrap())
                .unwrap(),
        )
        .build()
        .unwrap();
    let path = |n: &str| pki.join(n).display().to_string();
    let gw = Gateway::start_with(
        tmp.path(),
        &[
            ("TLS_CERT_FILE", path("gateway.pem")),
            ("TLS_KEY_FILE", path("gateway.key")),
            ("ADMIN_CLIENT_CA_FILE", path("admin-ca.pem")),
        ],
        ready,
    );
    assert!(gw.base.starts_with("https://"), "{}", gw.base);

    for terraform in TERRAFORMS {
        let dir = tmp.path().join(terraform);
        std::fs::create_dir(&dir).unwrap();
        let wd = Workdir::new(&dir, terraform);
        wd.write("main.tf", &provider_block(&gw.base, &pki, false));
        wd.init_offline().ok();
        let refused = wd.run(&["apply", "-auto-approve", "-no-color"]);
        assert_ne!(refused.code, 0, "{}", refused.all());
        assert!(
            refused.all().contains("requires a client certificate"),
            "Terraform says what is missing: {}",
            refused.all()
        );
        wd.write("main.tf", &provider_block(&gw.base, &pki, true));
        wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
        wd.run(&["destroy", "-auto-approve", "-no-color"]).ok();
    }
}
