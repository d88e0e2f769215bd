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
        License {
            schema: LICENSE_SCHEMA.into(),
            id: "lic_gateway".into(),
            customer: "ACME".into(),
            edition: "enterprise".into(),
            deployment_mode: DeploymentMode::AirGapped,
            entitlements: Entitlements {
                max_agents: Some(max_agents),
                max_gateways: None,
                features: vec![],
            },
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

    /// The site's request and the vendor's activation, installed at time `now` as
    /// `meshguard-license install` would.
    fn install(&self, dir: &Path, license: &SignedLicense, now: DateTime<Utc>) {
        let site = SiteDir::new(dir.join("data/license"));
        let request = site
            .create_request(license, &Expect::default(), "test", now)
            .unwrap();
        let activation = Activation::for_request(&license.license, &request, now)
            .unwrap()
            .sign(&self.key)
            .unwrap();
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let after = gw.get("/admin/audit/stats").1["total"].as_u64().unwrap();
        if after >= before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit stopped: {before} -> {after}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (status, body) = gw.post("/admin/agents", json!({"name": "new"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("license_required")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("install a renewal"),
        "{body}"
    );
    let (status, _) = gw.post("/admin/policies", json!({"name": "p2", "content": READS}));
    assert_eq!(status, 402);
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
    let foreign = Activation::for_request(&license.license, &request, Utc::now())
        .unwrap()
        .sign(&vendor.key)
        .unwrap();
    let body = json!({"license": serde_json::from_slice::<Value>(&license.envelope.to_json()).unwrap(),
                      "activation": serde_json::from_slice::<Value>(&foreign.envelope.to_json()).unwrap()});
    let (status, answer) = post_raw(&gw, "/admin/license", body.to_string().into_bytes());
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
    let activation = Activation::for_request(&license.license, &request, Utc::now())
        .unwrap()
        .sign(&vendor.key)
        .unwrap();
    let body = json!({"license": serde_json::from_slice::<Value>(&license.envelope.to_json()).unwrap(),
                      "activation": serde_json::from_slice::<Value>(&activation.envelope.to_json()).unwrap()});
    let (status, answer) = post_raw(&gw, "/admin/license", body.to_string().into_bytes());
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
