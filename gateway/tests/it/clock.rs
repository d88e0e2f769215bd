//! The wall clock stepped back and forward an hour under a running gateway (issue #37's clock
//! drill), with libfaketime (Debian's `libfaketime`, `LD_PRELOAD`) reading the offset from a file
//! on every call, the monotonic clock left real (the gateway's timers run on it). What a site
//! expects: decisions go on and every one is logged; checkpoints go on signing larger sizes; the
//! log verifies; each entry carries the wall time of its decision, so the index's time queries
//! find the stepped-back ones where the clock put them; and tokens expire by the wall clock.

use std::path::Path;

use serde_json::json;

use crate::harness::{Gateway, Options, policy, tempdir};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Sets the gateway's clock offset (libfaketime's `[+-]N[smhd]` relative form).
fn step(file: &Path, offset: &str) {
    std::fs::write(file, format!("{offset}\n")).unwrap();
}

fn decide(gw: &Gateway, token: &str, actions: &[&str]) {
    for a in actions {
        assert_eq!(gw.check(token, a).0, 200, "{a}");
    }
}

/// Entries (action, timestamp) the index returns for a time range.
fn between(gw: &Gateway, from: &str, to: &str) -> Vec<(String, String)> {
    let (status, body) = gw.get(&format!("/admin/audit?limit=100&from={from}&to={to}"));
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["timestamp"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn checkpoint_size(gw: &Gateway) -> u64 {
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200, "{cp}");
    cp["checkpoint"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The gateway under libfaketime, its offset read from `offset` on every call.
fn under_faketime(dir: &Path, offset: &Path) -> Gateway {
    Gateway::start_with(
        dir,
        Options::with(vec![
            ("LD_PRELOAD", FAKETIME.into()),
            ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("RATE_LIMIT_RPM", "0".into()),
        ]),
    )
}

/// A new agent's token for `ttl` seconds (0: no expiry).
fn token_for(gw: &Gateway, name: &str, ttl: u64) -> String {
    let (status, agent) = gw.post(
        "/admin/agents",
        json!({"name": name, "trustTier": "verified", "tokenTtl": ttl}),
    );
    assert_eq!(status, 201, "{agent}");
    agent["token"].as_str().unwrap().to_owned()
}

/// `now` moved by `minutes`, as the index's time queries take it.
fn at(now: chrono::DateTime<chrono::Utc>, minutes: i64) -> String {
    (now + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn the_clock_stepped_back_and_forward_an_hour_loses_nothing_and_expires_tokens_by_wall_time() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME}: Debian's libfaketime (`cargo xtask tools` installs it)"
    );
    let dir = tempdir();
    let offset = dir.path().join("faketime");
    step(&offset, "+0");
    let gw = under_faketime(dir.path(), &offset);
    policy(
        &gw,
        "reads",
        "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    // A token for 30 minutes, issued now, and one that never expires.
    let short = token_for(&gw, "short", 1800);
    let long = token_for(&gw, "long", 0);
    let now = chrono::Utc::now();
    decide(&gw, &long, &["read:before"]);
    let first = checkpoint_size(&gw);
    let back = an_hour_back(&gw, &offset, now, (&short, &long), first);
    an_hour_forward(&gw, &offset, now, (&short, &long), back);
    step(&offset, "+0");
    every_decision_is_in_the_log(&gw);
}

/// An hour back: decisions and checkpoints go on, the short token is not expired, and the
/// index finds the decisions an hour before now. Returns the checkpoint size.
fn an_hour_back(
    gw: &Gateway,
    offset: &Path,
    now: chrono::DateTime<chrono::Utc>,
    (short, long): (&str, &str),
    first: u64,
) -> u64 {
    step(offset, "-1h");
    decide(gw, long, &["read:back-1", "read:back-2"]);
    assert_eq!(
        gw.check(short, "read:back-3").0,
        200,
        "issued in the clock's future, not expired"
    );
    let back = checkpoint_size(gw);
    assert!(
        back > first,
        "checkpoints go on signing larger sizes: {first} then {back}"
    );
    let earlier = between(gw, &at(now, -70), &at(now, -50));
    let actions: Vec<&str> = earlier.iter().map(|(a, _)| a.as_str()).collect();
    for want in ["read:back-1", "read:back-2", "read:back-3"] {
        assert!(
            actions.contains(&want),
            "{want} where the clock put it: {earlier:?}"
        );
    }
    assert!(!actions.contains(&"read:before"), "{earlier:?}");
    back
}

/// An hour forward: the 30-minute token has expired by the wall clock; decisions and
/// checkpoints go on, and the index finds them an hour after now.
fn an_hour_forward(
    gw: &Gateway,
    offset: &Path,
    now: chrono::DateTime<chrono::Utc>,
    (short, long): (&str, &str),
    back: u64,
) {
    step(offset, "+1h");
    assert_eq!(
        gw.check(short, "read:forward").0,
        401,
        "expired by the wall clock"
    );
    decide(gw, long, &["read:forward-1"]);
    let forward = checkpoint_size(gw);
    assert!(forward > back, "{back} then {forward}");
    let later = between(gw, &at(now, 50), &at(now, 70));
    assert!(
        later.iter().any(|(a, _)| a == "read:forward-1"),
        "{later:?}"
    );
}

/// The log verifies and holds every decision, the refused one included.
fn every_decision_is_in_the_log(gw: &Gateway) {
    let (status, verify) = gw.get("/admin/audit/verify");
    assert_eq!(status, 200);
    assert_eq!(verify["valid"], true, "{verify}");
    let export = gw.get_text("/admin/audit/export?limit=1000");
    for want in [
        "read:before",
        "read:back-1",
        "read:back-2",
        "read:back-3",
        "read:forward-1",
    ] {
        assert!(
            export.contains(&format!("\"action\":\"{want}\"")),
            "{want} is in the log"
        );
    }
    assert!(
        export.contains("\"action\":\"read:forward\""),
        "the 401 is logged"
    );
}
