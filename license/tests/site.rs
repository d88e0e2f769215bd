//! The site directory and license states, with the clock passed in.

use chrono::{DateTime, Utc};
use meshguard_license::document::{LICENSE_SCHEMA, timestamp};
use meshguard_license::site::{Expect, SiteDir};
use meshguard_license::{
    Activation, DeploymentMode, Entitlements, License, SignedLicense, State, Status, VendorKey,
};

fn t(s: &str) -> DateTime<Utc> {
    timestamp::parse(s).unwrap()
}

fn license(key: &VendorKey, expires: &str) -> SignedLicense {
    License {
        schema: LICENSE_SCHEMA.into(),
        id: "lic_site".into(),
        customer: "ACME".into(),
        edition: "enterprise".into(),
        deployment_mode: DeploymentMode::AirGapped,
        entitlements: Entitlements {
            max_agents: Some(3),
            max_gateways: None,
            features: vec![],
        },
        regions: vec!["*".into()],
        not_before: t("2026-01-01T00:00:00Z"),
        expires: t(expires),
        grace_days: 30,
        sequence: 1,
        issued_at: t("2026-01-01T00:00:00Z"),
    }
    .sign(key)
    .unwrap()
}

/// request → activation → install, at time `now`.
fn install(site: &SiteDir, key: &VendorKey, signed: &SignedLicense, now: DateTime<Utc>) {
    let request = site
        .create_request(signed, &Expect::default(), "test", now)
        .unwrap();
    let activation = Activation::for_request(&signed.license, &request, now)
        .unwrap()
        .sign(key)
        .unwrap();
    site.install(
        &key.public(),
        &signed.envelope.to_json(),
        Some(&activation.envelope.to_json()),
        &Expect::default(),
        now,
    )
    .unwrap();
}

#[test]
fn states_through_warning_grace_and_expiry() {
    let key = VendorKey::generate();
    let signed = license(&key, "2027-01-01T00:00:00Z");
    let at = |s: &str| Status::of(&signed, t(s));

    let s = at("2026-06-01T00:00:00Z");
    assert_eq!((s.state, s.admin_writes_allowed), (State::Valid, true));
    assert!(s.warnings.is_empty());

    let s = at("2026-12-22T00:00:00Z");
    assert_eq!(s.state, State::Valid);
    assert!(
        s.warnings[0].contains("expires in 10 days"),
        "{:?}",
        s.warnings
    );

    let s = at("2027-01-15T00:00:00Z");
    assert_eq!((s.state, s.admin_writes_allowed), (State::Grace, true));
    assert!(
        s.message
            .contains("grace period ends on 2027-01-31T00:00:00Z"),
        "{}",
        s.message
    );

    let s = at("2027-01-31T00:00:01Z");
    assert_eq!((s.state, s.admin_writes_allowed), (State::Expired, false));
    assert!(
        s.message.contains("enforcement and audit continue"),
        "{}",
        s.message
    );

    let s = at("2025-12-31T23:59:59Z");
    assert_eq!(
        (s.state, s.admin_writes_allowed),
        (State::NotYetValid, false)
    );
}

#[test]
fn a_clock_set_back_is_reported_and_judged_at_the_later_time() {
    let dir = tempfile::tempdir().unwrap();
    let site = SiteDir::new(dir.path());
    let key = VendorKey::generate();
    let signed = license(&key, "2027-01-01T00:00:00Z");
    install(&site, &key, &signed, t("2026-12-30T00:00:00Z"));

    // The clock now reads a month earlier than a time already seen.
    let s = site.check(&key.public(), &Expect::default(), t("2026-11-30T00:00:00Z"));
    let rollback = s.clock_rollback.as_ref().expect("rollback reported");
    assert_eq!(rollback.last_seen, t("2026-12-30T00:00:00Z"));
    assert_eq!(s.checked_at, t("2026-12-30T00:00:00Z"));
    assert_eq!(
        s.state,
        State::Valid,
        "a rollback warns; it does not lock out"
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("clock was set back")),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("expires in 2 days")),
        "{:?}",
        s.warnings
    );

    // A few seconds of skew are not a rollback; later times move the mark.
    let s = site.check(&key.public(), &Expect::default(), t("2026-12-29T23:59:00Z"));
    assert!(s.clock_rollback.is_none());
    site.check(&key.public(), &Expect::default(), t("2027-01-20T00:00:00Z"));
    assert_eq!(site.last_seen().unwrap(), Some(t("2027-01-20T00:00:00Z")));
}

#[test]
fn an_installed_file_changed_on_disk_is_invalid_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let site = SiteDir::new(dir.path());
    let key = VendorKey::generate();
    install(
        &site,
        &key,
        &license(&key, "2030-01-01T00:00:00Z"),
        Utc::now(),
    );
    let s = site.check(&key.public(), &Expect::default(), Utc::now());
    assert_eq!(s.state, State::Valid);
    assert_eq!(s.max_agents, Some(3));

    // Swap the license envelope's payload for a copy that claims more agents.
    let path = dir.path().join("installed.json");
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut bigger = license(&key, "2030-01-01T00:00:00Z").license;
    bigger.entitlements.max_agents = Some(1000);
    let other = VendorKey::generate();
    file["license"]["payload"] = bigger.sign(&other).unwrap().envelope.payload.into();
    std::fs::write(&path, file.to_string()).unwrap();

    let s = site.check(&key.public(), &Expect::default(), Utc::now());
    assert_eq!((s.state, s.admin_writes_allowed), (State::Invalid, false));
    assert!(
        s.message.contains("signature does not match"),
        "{}",
        s.message
    );
    assert_eq!(
        s.max_agents, None,
        "nothing from an unverified file is used"
    );
}
