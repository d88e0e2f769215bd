//! TLS (issue #12 item 6): a site CA and certificates made by openssl at test time. The
//! gateway serves HTTPS only, takes a renewed certificate without a restart (seen by
//! `openssl s_client`), keeps its certificate when a broken one is put in place, and its
//! outbound calls trust the site CA bundle (`CA_BUNDLE_FILE`), and only then.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::harness::{ADMIN_TOKEN, Gateway, Options, tempdir, tls_client};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt openssl) runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA (`ca.pem`, `ca.key`) in `dir`.
fn site_ca(dir: &Path, name: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
        dir,
    );
}

/// A certificate for 127.0.0.1 named `cn`, signed by the CA `ca`: `<cn>.pem` and `<cn>.key`.
fn server_cert(dir: &Path, ca: &str, cn: &str) {
    signed_cert(dir, ca, cn, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
}

/// A client certificate named `cn` (an operator), signed by the CA `ca`.
fn client_cert(dir: &Path, ca: &str, cn: &str) {
    signed_cert(dir, ca, cn, "extendedKeyUsage=clientAuth\n");
}

fn signed_cert(dir: &Path, ca: &str, cn: &str, extensions: &str) {
    std::fs::write(dir.join("san.cnf"), extensions).unwrap();
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{cn}.key"),
            "-out",
            &format!("{cn}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{cn}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{cn}.pem"),
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
        dir,
    );
}

/// The subject of the certificate the server at `addr` presents, as openssl reads it.
fn served_subject(addr: &str) -> String {
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x509.stdin
        .take()
        .unwrap()
        .write_all(&s_client.stdout)
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Replaces `to` with `from` by rename, as cert-manager or an operator's script does.
fn put(dir: &Path, from: &str, to: &str) {
    std::fs::copy(dir.join(from), dir.join(format!("{to}.new"))).unwrap();
    std::fs::rename(dir.join(format!("{to}.new")), dir.join(to)).unwrap();
}

#[test]
fn the_gateway_serves_https_reloads_its_certificate_and_trusts_the_site_ca_outbound() {
    let pki = tempdir();
    let p = pki.path();
    site_ca(p, "site-ca");
    server_cert(p, "site-ca", "gw-one");
    server_cert(p, "site-ca", "gw-two");
    std::fs::copy(p.join("gw-one.pem"), p.join("tls.pem")).unwrap();
    std::fs::copy(p.join("gw-one.key"), p.join("tls.key")).unwrap();
    let tls_env = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("TLS_CERT_FILE", p.join("tls.pem").display().to_string()),
            ("TLS_KEY_FILE", p.join("tls.key").display().to_string()),
            ("POLICIES_RELOAD_SECONDS", "1".to_owned()),
        ];
        env.extend(extra);
        Options::with(env)
    };
    let dir = tempdir();
    let gw = Gateway::start_tls(dir.path(), tls_env(vec![]), &p.join("site-ca.pem"));
    assert!(gw.base.starts_with("https://127.0.0.1:"), "{}", gw.base);
    let (status, body) = gw.get("/health");
    assert_eq!(status, 200, "{body}");
    let (status, agents) = gw.get("/admin/agents");
    assert_eq!(status, 200, "the admin API answers over TLS: {agents}");

    // No plain HTTP on the TLS port: the token would cross in clear.
    let plain = gw.base.replacen("https://", "http://", 1);
    let clear = reqwest::blocking::Client::new()
        .get(format!("{plain}/health"))
        .send();
    assert!(
        clear.is_err() || !clear.unwrap().status().is_success(),
        "plain HTTP is not served"
    );

    // A renewed certificate is taken without a restart.
    let addr = gw.base.trim_start_matches("https://").to_owned();
    assert!(served_subject(&addr).contains("gw-one"));
    put(p, "gw-two.key", "tls.key");
    put(p, "gw-two.pem", "tls.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served_subject(&addr).contains("gw-two") {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(gw.get("/health").0, 200);

    // A certificate whose key does not match is refused; the one in use stays.
    put(p, "gw-one.pem", "tls.pem");
    std::thread::sleep(Duration::from_secs(3));
    assert!(served_subject(&addr).contains("gw-two"));
    assert_eq!(gw.get("/health").0, 200);

    // Outbound: a gateway forwarding to this HTTPS one trusts it only with the site CA.
    let ca = p.join("site-ca.pem").display().to_string();
    let through = forward_to(&gw.base, Some(&ca));
    assert_eq!(through.0, 200, "{}", through.1);
    let refused = forward_to(&gw.base, None);
    assert_eq!(
        refused.0, 502,
        "an unknown CA is not trusted: {}",
        refused.1
    );
}

/// A `GET /proxy/health` through a new gateway whose PROXY_TARGET is `target`, trusting the CA
/// bundle `ca` if given: (status, body).
fn forward_to(target: &str, ca: Option<&str>) -> (u16, String) {
    let dir = tempdir();
    let mut env = vec![("PROXY_TARGET", target.to_owned())];
    if let Some(ca) = ca {
        env.push(("CA_BUNDLE_FILE", ca.to_owned()));
    }
    let gw = Gateway::start_with(dir.path(), Options::with(env));
    let (_, token) = crate::harness::agent(&gw, "caller", "verified", &[]);
    crate::harness::policy(
        &gw,
        "reads",
        "name: reads\nrules:\n  - name: r\n    effect: allow\n    actions: [\"read:*\"]\n",
    );
    let r = gw
        .raw(Method::GET, "/proxy/health")
        .bearer_auth(&token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_certificate_that_does_not_load_stops_the_start_with_why() {
    let pki = tempdir();
    let p = pki.path();
    site_ca(p, "site-ca");
    server_cert(p, "site-ca", "gw-one");
    server_cert(p, "site-ca", "gw-two");
    let dir = tempdir();
    let out = crate::harness::command(
        dir.path(),
        &Options::with(vec![
            ("TLS_CERT_FILE", p.join("gw-one.pem").display().to_string()),
            ("TLS_KEY_FILE", p.join("gw-two.key").display().to_string()),
        ]),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("does not belong to the certificate"), "{why}");
    let out = crate::harness::command(
        dir.path(),
        &Options::with(vec![(
            "TLS_CERT_FILE",
            p.join("gw-one.pem").display().to_string(),
        )]),
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "a certificate needs its key");
}

#[test]
fn with_an_admin_client_ca_the_admin_api_requires_its_certificate_and_agents_need_none() {
    let pki = tempdir();
    let p = pki.path();
    site_ca(p, "site-ca");
    server_cert(p, "site-ca", "gw");
    site_ca(p, "admin-ca");
    client_cert(p, "admin-ca", "operator");
    site_ca(p, "rogue-ca");
    client_cert(p, "rogue-ca", "intruder");
    let identity = |cn: &str| {
        let mut pem = std::fs::read(p.join(format!("{cn}.pem"))).unwrap();
        pem.extend(std::fs::read(p.join(format!("{cn}.key"))).unwrap());
        pem
    };
    let dir = tempdir();
    let gw = Gateway::start_tls_as(
        dir.path(),
        Options::with(vec![
            ("TLS_CERT_FILE", p.join("gw.pem").display().to_string()),
            ("TLS_KEY_FILE", p.join("gw.key").display().to_string()),
            (
                "ADMIN_CLIENT_CA_FILE",
                p.join("admin-ca.pem").display().to_string(),
            ),
            ("PROXY_TARGET", "http://127.0.0.1:9".to_owned()),
        ]),
        &p.join("site-ca.pem"),
        &identity("operator"),
    );
    let (status, body) = gw.get("/admin/agents");
    assert_eq!(status, 200, "the operator's certificate and token: {body}");
    let (_, agent_token) = crate::harness::agent(&gw, "worker", "verified", &[]);

    without_a_certificate_only_agents_get_in(&gw, p, &agent_token);
    // A certificate from another CA does not get past the handshake.
    let rogue = tls_client(&p.join("site-ca.pem"), Some(&identity("intruder")));
    let r = rogue
        .get(format!("{}/admin/agents", gw.base))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send();
    assert!(
        r.as_ref().map_or(true, |r| r.status() == 401),
        "a certificate from another CA is refused: {:?}",
        r.map(|r| r.status())
    );

    // curl, as an operator would run it.
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(p.join("site-ca.pem"))
        .arg("--cert")
        .arg(p.join("operator.pem"))
        .arg("--key")
        .arg(p.join("operator.key"))
        .args(["-H", &format!("X-Admin-Token: {ADMIN_TOKEN}")])
        .arg(format!("{}/admin/agents", gw.base))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin token alone, from a connection without a certificate, is refused (the batch
/// endpoint's admin form too); agents connect without a certificate, as before.
fn without_a_certificate_only_agents_get_in(gw: &Gateway, p: &Path, agent_token: &str) {
    let bare = tls_client(&p.join("site-ca.pem"), None);
    let r = bare
        .get(format!("{}/admin/agents", gw.base))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let why = r.text().unwrap();
    assert!(why.contains("ADMIN_CLIENT_CA_FILE"), "{why}");
    let r = bare
        .post(format!("{}/api/v1/governance/batch", gw.base))
        .header("X-Admin-Token", ADMIN_TOKEN)
        .json(&serde_json::json!({"agentId": "x", "actions": [{"action": "read:a"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "the batch endpoint's admin form too");

    // Agents connect without a certificate, as before.
    let r = bare
        .get(format!("{}/proxy/check", gw.base))
        .bearer_auth(agent_token)
        .header("X-MeshGuard-Action", "read:docs")
        .send()
        .unwrap();
    assert!(
        r.status() == 200 || r.status() == 403,
        "an agent is decided, not refused at the door: {}",
        r.status()
    );
    assert_eq!(
        bare.get(format!("{}/health", gw.base))
            .send()
            .unwrap()
            .status(),
        200
    );
}
