//! Licensing in the running gateway: limits, renewal without restart, expiry that freezes
//! admin writes but never enforcement or audit, clock rollback, installation binding.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use meshguard_license::document::LICENSE_SCHEMA;
use meshguard_license::site::{Expect, SiteDir};
use meshguard_license::{
    Activation, DeploymentMode, Entitlements, License, SignedLicense, VendorKey,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, Options, PythonServer, agent, json, policy, tempdir};

const READS: &str =
    "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n";

struct Vendor {
    key: VendorKey,
}

impl Vendor {
    fn new(dir: &Path) -> Self {
        let key = VendorKey::generate();
        std::fs::write(dir.join("vendor.pub"), key.public().to_pem()).unwrap();
        Self { key }
    }

    fn license(&self, sequence: u64, max_agents: u64, expires: DateTime<Utc>) -> SignedLicense {
        let entitlements = Entitlements {
            max_agents: Some(max_agents),
            max_gateways: None,
            features: vec![],
        };
        self.license_with(sequence, entitlements, expires)
    }

    fn license_with(
        &self,
        sequence: u64,
        entitlements: Entitlements,
        expires: DateTime<Utc>,
    ) -> SignedLicense {
        License {
            schema: LICENSE_SCHEMA.into(),
            id: "lic_gateway".into(),
            customer: "ACME".into(),
            edition: "enterprise".into(),
            deployment_mode: DeploymentMode::AirGapped,
            entitlements,
            regions: vec!["eu-west".into()],
            not_before: days(-400),
            expires,
            grace_days: 30,
            sequence,
            issued_at: days(-400),
        }
        .sign(&self.key)
        .unwrap()
    }

    /// The vendor's answer to `request`.
    fn activate(
        &self,
        license: &License,
        request: &meshguard_license::ActivationRequest,
        now: DateTime<Utc>,
    ) -> meshguard_license::SignedActivation {
        Activation::for_request(license, request, now)
            .unwrap()
            .sign(&self.key)
            .unwrap()
    }

    /// The site's request and the vendor's activation, installed at time `now` as
    /// `meshguard-license install` would.
    fn install(&self, dir: &Path, license: &SignedLicense, now: DateTime<Utc>) {
        let site = SiteDir::new(dir.join("data/license"));
        let request = site
            .create_request(license, &Expect::default(), "test", now)
            .unwrap();
        let activation = self.activate(&license.license, &request, now);
        site.install(
            &self.key.public(),
            &license.envelope.to_json(),
            Some(&activation.envelope.to_json()),
            &Expect::default(),
            now,
        )
        .unwrap();
    }
}

fn days(n: i64) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::days(n);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

fn licensed(dir: &Path, extra: Vec<(&'static str, String)>) -> Options<'static> {
    let mut env = vec![
        (
            "LICENSE_PUBKEY",
            dir.join("vendor.pub").display().to_string(),
        ),
        ("DEPLOYMENT_MODE", "air-gapped".to_owned()),
        ("REGION", "eu-west".to_owned()),
    ];
    env.extend(extra);
    Options::with(env)
}

/// `POST /admin/license`'s body: `{"license": …, "activation": …}`.
fn install_body(
    license: &SignedLicense,
    activation: &meshguard_license::SignedActivation,
) -> Vec<u8> {
    let envelope = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    json!({"license": envelope(license.envelope.to_json()),
           "activation": envelope(activation.envelope.to_json())})
    .to_string()
    .into_bytes()
}

fn post_raw(gw: &Gateway, path: &str, body: Vec<u8>) -> (u16, Value) {
    json(gw.admin(Method::POST, path).body(body).send().unwrap())
}

#[test]
fn agent_limit_holds_and_a_renewal_installs_without_restart() {
    let dir = tempdir();
    let vendor = Vendor::new(dir.path());
    let first = vendor.license(1, 2, days(300));
    vendor.install(dir.path(), &first, Utc::now());
    let gw = Gateway::start_with(dir.path(), licensed(dir.path(), vec![]));

    let (status, health) = gw.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert_eq!(health["license"]["state"], "valid");

    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "one", "verified", &[]);
    agent(&gw, "two", "verified", &[]);
    let (status, body) = gw.post("/admin/agents", json!({"name": "three"}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "license_limit");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allows 2 active agents and 2 exist"),
        "{body}"
    );
    assert_eq!(
        gw.check(&token, "read:x").0,
        200,
        "existing agents keep working"
    );

    // A renewal with room for more, posted as the license file itself.
    let renewal = vendor.license(2, 5, days(700));
    let (status, body) = post_raw(&gw, "/admin/license", renewal.envelope.to_json());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "renewed");
    assert_eq!(body["license"]["maxAgents"], 5);
    agent(&gw, "three", "verified", &[]);

    // The first license again is a replay; a changed license is refused; nothing changes.
    let (status, body) = post_raw(&gw, "/admin/license", first.envelope.to_json());
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("replayed")),
        "{body}"
    );
    let mut forged: Value = serde_json::from_slice(&renewal.envelope.to_json()).unwrap();
    forged["payload"] = vendor.license(3, 500, days(700)).envelope.payload.into();
    forged["signatures"][0]["sig"] = renewal.envelope.signatures[0].sig.clone().into();
    let (status, body) = post_raw(&gw, "/admin/license", forged.to_string().into_bytes());
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_signature")),
        "{body}"
    );
    let (_, lic) = gw.get("/admin/license");
    assert_eq!(
        (lic["sequence"].as_u64(), lic["maxAgents"].as_u64()),
        (Some(2), Some(5))
    );

    // Encrypted to the site's age key with the stock age tool, it installs the same way.
    let recipient = SiteDir::new(dir.path().join("data/license"))
        .ensure_identity()
        .unwrap();
    let clear = dir.path().join("renewal3.json");
    std::fs::write(&clear, vendor.license(3, 7, days(800)).envelope.to_json()).unwrap();
    let out = Command::new("age")
        .args(["-a", "-r", &recipient])
        .arg(&clear)
        .output()
        .expect("age is installed (apt age)");
    assert!(out.status.success());
    let (status, body) = post_raw(&gw, "/admin/license", out.stdout);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["license"]["sequence"], 3);
}

#[test]
fn an_expired_license_freezes_admin_writes_but_never_enforcement_or_audit() {
    let dir = tempdir();
    // Set up agents and policies first, with licensing off.
    let (agent_id, token, spare_id) = {
        let gw = Gateway::start(dir.path());
        policy(&gw, "reads", READS);
        let (id, token) = agent(&gw, "worker", "verified", &[]);
        let (spare, _) = agent(&gw, "spare", "verified", &[]);
        (id, token, spare)
    };
    // Installed while it was valid; its grace period ended 10 days ago.
    let vendor = Vendor::new(dir.path());
    vendor.install(dir.path(), &vendor.license(1, 50, days(-40)), days(-45));
    let gw = Gateway::start_with(dir.path(), licensed(dir.path(), vec![]));

    let (status, health) = gw.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert_eq!(health["license"]["state"], "expired");
    assert_eq!(health["license"]["adminWritesAllowed"], false);

    let before = gw.get("/admin/audit/stats").1["total"].as_u64().unwrap();
    assert_eq!(gw.check(&token, "read:x").0, 200, "decisions continue");
    assert_eq!(gw.check(&token, "write:x").0, 403, "denials continue");
    audit_grows_past(&gw, before + 1);
    writes_are_frozen(&gw, "install a renewal");
    let (status, _) = gw.patch(&format!("/admin/agents/{agent_id}"), json!({"tags": ["x"]}));
    assert_eq!(status, 402);
    // Without credentials the answer is 401, and says nothing about the license.
    let r = gw
        .raw(Method::POST, "/admin/agents")
        .json(&json!({"name": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Security actions on existing agents stay open.
    let (status, body) = gw.post(&format!("/admin/agents/{agent_id}/token"), json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, _) = gw.delete(&format!("/admin/agents/{spare_id}"));
    assert_eq!(status, 200);

    // A renewal unfreezes at once.
    let (status, body) = post_raw(
        &gw,
        "/admin/license",
        vendor.license(2, 50, days(365)).envelope.to_json(),
    );
    assert_eq!(status, 200, "{body}");
    agent(&gw, "new", "verified", &[]);
}

#[test]
fn grace_period_and_a_clock_set_back_warn_and_alert_but_do_not_lock_out() {
    const SECRET: &str = "whsec-license-7a1c3e5g9i";
    let rx = PythonServer::start("receiver.py", &[SECRET]);
    let dir = tempdir();
    let vendor = Vendor::new(dir.path());
    // Expired two days ago (grace 30 days); the clock once read ten days ahead of now.
    vendor.install(dir.path(), &vendor.license(1, 50, days(-2)), days(10));
    let gw = Gateway::start_with(
        dir.path(),
        licensed(
            dir.path(),
            vec![
                ("ALERT_WEBHOOK_URL", format!("{}/hook", rx.url)),
                ("ALERT_WEBHOOK_SECRET", SECRET.to_owned()),
            ],
        ),
    );
    let (_, lic) = gw.get("/admin/license");
    assert_eq!(lic["state"], "grace", "{lic}");
    assert!(lic["clockRollback"]["lastSeen"].is_string(), "{lic}");
    assert_eq!(lic["adminWritesAllowed"], true);

    let r = gw
        .admin(Method::POST, "/admin/agents")
        .json(&json!({"name": "still-allowed"}))
        .send()
        .unwrap();
    let status = r.status();
    let warning = r
        .headers()
        .get("x-meshguard-license-warning")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(status, 201, "{}", r.text().unwrap_or_default());
    assert!(warning.contains("grace period ends"), "{warning}");

    let titles: Vec<String> = rx
        .received(2)
        .iter()
        .filter_map(|a| a["body"]["title"].as_str().map(str::to_owned))
        .collect();
    assert!(
        titles.iter().any(|t| t == "System Clock Set Back"),
        "{titles:?}"
    );
    assert!(
        titles.iter().any(|t| t == "License In Grace Period"),
        "{titles:?}"
    );
}

#[test]
fn activation_through_the_admin_api_is_bound_to_this_installation_and_deployment() {
    let dir = tempdir();
    let vendor = Vendor::new(dir.path());
    let gw = Gateway::start_with(dir.path(), licensed(dir.path(), vec![]));

    let (_, lic) = gw.get("/admin/license");
    assert_eq!(lic["state"], "missing");
    let installation = lic["installationId"].as_str().unwrap().to_owned();
    let (status, body) = gw.post("/admin/agents", json!({"name": "early"}));
    assert_eq!(status, 402, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no license is installed"),
        "{body}"
    );

    // An activation made for another installation is refused.
    let license = vendor.license(1, 10, days(365));
    let other = tempdir();
    let other_site = SiteDir::new(other.path());
    let request = other_site
        .create_request(&license, &Expect::default(), "test", Utc::now())
        .unwrap();
    let foreign = vendor.activate(&license.license, &request, Utc::now());
    let (status, answer) = post_raw(&gw, "/admin/license", install_body(&license, &foreign));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains(&installation),
        "{answer}"
    );

    // The site's own request, answered by the vendor, activates it.
    let site = SiteDir::new(dir.path().join("data/license"));
    let request = site
        .create_request(&license, &Expect::default(), "test", Utc::now())
        .unwrap();
    assert_eq!(request.installation_id, installation);
    let activation = vendor.activate(&license.license, &request, Utc::now());
    let (status, answer) = post_raw(&gw, "/admin/license", install_body(&license, &activation));
    assert_eq!(
        (status, answer["result"].as_str()),
        (200, Some("activated")),
        "{answer}"
    );
    agent(&gw, "now-allowed", "verified", &[]);
    drop(gw);

    // The same installation started as another deployment mode: the license does not fit.
    let gw = Gateway::start_with(
        dir.path(),
        licensed(
            dir.path(),
            vec![("DEPLOYMENT_MODE", "on-prem-kubernetes".into())],
        ),
    );
    let (_, lic) = gw.get("/admin/license");
    assert_eq!(lic["state"], "invalid", "{lic}");
    assert!(
        lic["message"]
            .as_str()
            .unwrap()
            .contains("deployment mode air-gapped"),
        "{lic}"
    );
}

/// A copy of the gateway binary with `key` stamped into its vendor-key slot, as the release
/// pipeline makes it (`meshguard-bundle images` with `MESHGUARD_VENDOR_PUBKEY`).
fn keyed_binary(dir: &Path, key: &meshguard_license::VendorPublicKey) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let mut bytes = std::fs::read(crate::harness::binary()).unwrap();
    meshguard_license::slot::stamp(&mut bytes, key, "meshguard-gateway").unwrap();
    let path = dir.join("meshguard-gateway-keyed");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn keyed(program: &Path, extra: Vec<(&'static str, String)>) -> Options<'static> {
    let mut env = vec![
        ("DEPLOYMENT_MODE", "air-gapped".to_owned()),
        ("REGION", "eu-west".to_owned()),
    ];
    env.extend(extra);
    Options {
        program: Some(program.to_owned()),
        ..Options::with(env)
    }
}

/// Admin writes answer 402 `license_required`, with a message that says `steps`.
fn writes_are_frozen(gw: &Gateway, steps: &str) {
    let (status, body) = gw.post("/admin/agents", json!({"name": "refused"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("license_required")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains(steps), "{body}");
    let (status, _) = gw.post("/admin/policies", json!({"name": "p2", "content": READS}));
    assert_eq!(status, 402);
}

/// The audit log's size, waited for until it holds more than `than`.
fn audit_grows_past(gw: &Gateway, than: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = gw.get("/admin/audit/stats").1["total"].as_u64().unwrap();
        if now > than {
            return now;
        }
        assert!(Instant::now() < deadline, "audit stopped at {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_keyed_build_licenses_with_its_own_key_and_opens_admin_writes_once_activated() {
    let dir = tempdir();
    let vendor = Vendor::new(dir.path());
    // Agents and policies made first by the development build, which says it licenses nothing.
    let token = {
        let gw = Gateway::start(dir.path());
        let (_, info) = gw.get("/admin/info");
        assert_eq!(info["build"]["kind"], "development", "{info}");
        assert_eq!(info["build"]["note"], "development build, licensing off");
        assert!(gw.log_text().contains("development build, licensing off"));
        policy(&gw, "reads", READS);
        agent(&gw, "worker", "verified", &[]).1
    };
    let program = keyed_binary(dir.path(), &vendor.key.public());

    // Another vendor's key cannot be swapped in by environment.
    let other = dir.path().join("other.pub");
    std::fs::write(&other, VendorKey::generate().public().to_pem()).unwrap();
    let why = crate::harness::refused_start(
        dir.path(),
        &keyed(
            &program,
            vec![("LICENSE_PUBKEY", other.display().to_string())],
        ),
    );
    assert!(
        why.contains("this release build carries vendor key")
            && why.contains(&vendor.key.public().key_id()),
        "{why}"
    );

    let gw = Gateway::start_with(
        dir.path(),
        keyed(&program, vec![("METRICS_ENABLED", "true".into())]),
    );
    let (_, info) = gw.get("/admin/info");
    assert_eq!(
        (
            info["build"]["kind"].as_str(),
            info["build"]["vendorKeyId"].as_str()
        ),
        (Some("release"), Some(vendor.key.public().key_id().as_str())),
        "{info}"
    );
    assert_eq!(gw.get("/admin/license").1["state"], "missing");

    // Before activation: writes refused with the steps, decisions and audit going on.
    let audited = gw.get("/admin/audit/stats").1["total"].as_u64().unwrap();
    assert_eq!(gw.check(&token, "read:x").0, 200);
    assert_eq!(gw.check(&token, "write:x").0, 403);
    let audited = audit_grows_past(&gw, audited + 1);
    writes_are_frozen(&gw, "POST /admin/license/request");

    // The request made through the gateway, answered by the vendor, installed through it.
    activate_through(&gw, &vendor, &vendor.license(1, 10, days(365)));

    // After: writes accepted; decisions and audit as before.
    agent(&gw, "after", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);
    audit_grows_past(&gw, audited);
    let metrics = gw.get_text("/metrics");
    assert!(
        metrics.contains("meshguard_license_state{state=\"valid\"} 1"),
        "{metrics}"
    );
}

/// One of several gateways on one PostgreSQL control plane, licensed with `vendor.pub`.
fn member(dir: &Path, vendor_dir: &Path, url: &str) -> Gateway {
    let name = dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches('.')
        .to_owned();
    Gateway::start_with(
        dir,
        licensed(
            vendor_dir,
            vec![
                ("DATABASE_URL", url.to_owned()),
                (
                    "SECRETS_KEY",
                    "bWVzaGd1YXJkLWxpY2Vuc2UtdGVzdC1rZXktMzJieXQ=".into(),
                ),
                ("AUDIT_ORIGIN", format!("it.licensing/{name}")),
                ("CONTROL_PLANE_POLL_MS", "500".into()),
            ],
        ),
    )
}

/// Installs `license` through `gw`: the request made through it, the vendor's activation.
fn activate_through(gw: &Gateway, vendor: &Vendor, license: &SignedLicense) {
    let (status, request) = post_raw(gw, "/admin/license/request", license.envelope.to_json());
    assert_eq!(status, 200, "{request}");
    let request =
        meshguard_license::ActivationRequest::parse(request.to_string().as_bytes(), "request")
            .unwrap();
    let activation = vendor.activate(&license.license, &request, Utc::now());
    let (status, body) = post_raw(gw, "/admin/license", install_body(license, &activation));
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("activated")),
        "{body}"
    );
}

#[test]
fn gateways_on_one_database_share_one_activation_and_max_gateways_holds_the_third() {
    let server = meshguard_testkit::pg::PgServer::start();
    let url = server.database("licensing");
    let vendor_dir = tempdir();
    let vendor = Vendor::new(vendor_dir.path());
    let dirs = [tempdir(), tempdir(), tempdir()];
    let gws: Vec<Gateway> = dirs
        .iter()
        .map(|d| member(d.path(), vendor_dir.path(), &url))
        .collect();
    let ids: Vec<String> = gws
        .iter()
        .map(|g| {
            g.get("/admin/license").1["installationId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one installation: {ids:?}"
    );

    // Requested through the first, installed through the second: one activation for all.
    let license = vendor.license_with(
        1,
        Entitlements {
            max_agents: Some(10),
            max_gateways: Some(2),
            features: vec![],
        },
        days(365),
    );
    let (status, _) = gws[0].post("/admin/agents", json!({"name": "early"}));
    assert_eq!(status, 402);
    let installed = Instant::now();
    activate_through(&gws[1], &vendor, &license);
    for (i, gw) in gws.iter().enumerate() {
        meshguard_testkit::wait_for(&format!("gateway {i} to see the license"), || {
            gw.get("/admin/license").1["state"] == "valid"
        });
    }
    eprintln!(
        "the license acted on every gateway within {:?} (poll 500 ms)",
        installed.elapsed()
    );

    // The third gateway to start is beyond maxGateways: read-only for admin writes, and says why.
    let (_, third) = gws[2].get("/admin/license");
    assert_eq!(third["adminWritesAllowed"], false, "{third}");
    assert!(
        third["message"].as_str().unwrap().contains("maxGateways"),
        "{third}"
    );
    let (status, body) = gws[2].post("/admin/agents", json!({"name": "via-third"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("license_required")),
        "{body}"
    );
    policy(&gws[0], "reads", READS);
    let (_, token) = agent(&gws[0], "worker", "verified", &[]);
    meshguard_testkit::wait_for("the third gateway to enforce the policy", || {
        gws[2].check(&token, "read:x").0 == 200
    });

    // One of the first two stops: once its lease lapses, the third may write.
    let mut gws = gws;
    gws.remove(0).kill9();
    meshguard_testkit::wait_for("the third gateway to take the freed place", || {
        gws[1].get("/admin/license").1["adminWritesAllowed"] == true
    });
    agent(&gws[1], "via-third", "verified", &[]);
}

#[test]
fn a_site_moving_from_sqlite_to_postgres_keeps_its_activation_and_cannot_move_back() {
    let dir = tempdir();
    let vendor = Vendor::new(dir.path());
    vendor.install(dir.path(), &vendor.license(1, 10, days(365)), Utc::now());
    let (installation, token, changes) = {
        let gw = Gateway::start_with(dir.path(), licensed(dir.path(), vec![]));
        let (_, lic) = gw.get("/admin/license");
        assert_eq!(lic["state"], "valid", "{lic}");
        policy(&gw, "reads", READS);
        let (_, token) = agent(&gw, "before-the-move", "verified", &[]);
        let changes = gw.get("/admin/changes").1["changes"]
            .as_array()
            .unwrap()
            .len();
        (
            lic["installationId"].as_str().unwrap().to_owned(),
            token,
            changes,
        )
    };

    // The same gateway, its volume as it was, now on PostgreSQL: no new activation.
    let server = meshguard_testkit::pg::PgServer::start();
    let url = server.database("moved");
    let env = |url: &str| {
        vec![
            ("DATABASE_URL", url.to_owned()),
            (
                "SECRETS_KEY",
                "bWVzaGd1YXJkLWxpY2Vuc2UtdGVzdC1rZXktMzJieXQ=".into(),
            ),
        ]
    };
    {
        let gw = Gateway::start_with(dir.path(), licensed(dir.path(), env(&url)));
        let (_, lic) = gw.get("/admin/license");
        assert_eq!(
            (lic["state"].as_str(), lic["installationId"].as_str()),
            (Some("valid"), Some(installation.as_str())),
            "{lic}"
        );
        // The control plane came along: the agent's token, the policy, the change log.
        assert_eq!(gw.check(&token, "read:x").0, 200);
        assert_eq!(gw.check(&token, "write:x").0, 403);
        agent(&gw, "after-the-move", "verified", &[]);
        let (_, log) = gw.get("/admin/changes");
        let seqs: Vec<i64> = log["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["seq"].as_i64().unwrap())
            .collect();
        // The records made on SQLite keep their numbers; the license's move and the new agent
        // follow them.
        let expected: Vec<i64> = (1..=changes as i64 + 2).collect();
        assert_eq!(seqs, expected, "{log}");
        assert_eq!(log["changes"][changes]["kind"], "license", "{log}");
        assert!(
            gw.log_text().contains("SQLite control plane was copied"),
            "{}",
            gw.log_text()
        );
        // A second gateway on the database, with a volume of its own, shares the activation.
        let other = tempdir();
        let second = Gateway::start_with(
            other.path(),
            licensed(dir.path(), {
                let mut e = env(&url);
                e.push(("AUDIT_ORIGIN", "it.licensing/second".into()));
                e
            }),
        );
        let (_, lic) = second.get("/admin/license");
        assert_eq!(
            lic["installationId"].as_str(),
            Some(installation.as_str()),
            "{lic}"
        );
        assert_eq!(lic["state"], "valid");
        assert_eq!(second.check(&token, "read:x").0, 200);
    }

    // Back to SQLite with the moved directory: refused, with the reason.
    let why = crate::harness::refused_start(dir.path(), &licensed(dir.path(), vec![]));
    assert!(
        why.contains("moved to a PostgreSQL control plane") && why.contains(&installation),
        "{why}"
    );
}

/// The admin routes as the router declares them (`routes/mod.rs`, up to the license gate):
/// each path with the methods it answers.
fn admin_routes() -> Vec<(String, Vec<Method>)> {
    let source = include_str!("../../src/routes/mod.rs");
    let start = source
        .find("let admin = Router::new()")
        .expect("the admin router");
    let end = source[start..]
        .find("license::gate")
        .expect("the license gate")
        + start;
    source[start..end]
        .split(".route(")
        .skip(1)
        .map(|chunk| {
            let path = chunk.split('"').nth(1).expect("a route's path").to_owned();
            let methods = ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| calls(chunk, m))
                .map(|m| Method::from_bytes(m.to_uppercase().as_bytes()).unwrap())
                .collect();
            (path, methods)
        })
        .collect()
}

/// Whether `text` calls `name(` (not as the end of a longer name, as in `reissue_token(`).
fn calls(text: &str, name: &str) -> bool {
    text.match_indices(&format!("{name}(")).any(|(at, _)| {
        !text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn with_no_license_every_admin_write_route_and_method_is_frozen_but_the_named_ones() {
    let dir = tempdir();
    Vendor::new(dir.path());
    let gw = Gateway::start_with(dir.path(), licensed(dir.path(), vec![]));
    assert_eq!(gw.get("/admin/license").1["state"], "missing");
    // Open whatever the license says: the license itself, audit intake and checkpoints,
    // read-only policy tools, revoking one agent and re-issuing its token.
    let open = [
        (Method::POST, "/license"),
        (Method::POST, "/license/request"),
        (Method::POST, "/audit/ingest"),
        (Method::POST, "/audit/checkpoint"),
        (Method::POST, "/audit/cosignatures"),
        (Method::POST, "/policies/validate"),
        (Method::POST, "/policies/test"),
        (Method::DELETE, "/agents/:id"),
        (Method::POST, "/agents/:id/token"),
    ];
    let routes = admin_routes();
    assert!(routes.len() > 30, "the router was read: {routes:?}");
    let mut writes = 0;
    for (path, methods) in &routes {
        for method in methods.iter().filter(|m| **m != Method::GET) {
            writes += 1;
            let url = format!(
                "/admin{}",
                path.replace(":id", "agt_x")
                    .replace(":key", "p_x")
                    .replace("*path", "x")
            );
            let r = gw
                .admin(method.clone(), &url)
                .json(&json!({}))
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let frozen = status == 402;
            let should = !open.contains(&(method.clone(), path.as_str()));
            assert_eq!(frozen, should, "{method} {path} answered {status}");
        }
    }
    assert!(writes >= 15, "{writes} write routes found: {routes:?}");
}
