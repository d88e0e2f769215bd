//! A site CA and a certificate it issued, made with the openssl command line, as a site's
//! administrator makes them.

use std::path::Path;
use std::process::Command;

/// With openssl in `dir`: a CA (`ca.pem`, `ca.key`) and a certificate `<name>.pem` (key
/// `<name>.key`) it issued for the subjectAltName `san` (e.g. `DNS:localhost,IP:127.0.0.1`).
/// P-256 keys, valid two days.
pub fn make_ca(dir: &Path, name: &str, san: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let ca_subject = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test site CA",
    ];
    openssl(dir, &[&["req", "-x509"], &ec[..], &ca_subject[..]].concat());
    let _ = std::fs::remove_file(dir.join("ca.srl"));
    let subject = format!("/CN={name}");
    let request = ["-keyout", &key, "-out", &csr, "-subj", &subject];
    openssl(dir, &[&["req"], &ec[..], &request[..]].concat());
    std::fs::write(dir.join("san.cnf"), format!("subjectAltName={san}\n"))
        .expect("san.cnf is written");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
}

/// Runs openssl in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
