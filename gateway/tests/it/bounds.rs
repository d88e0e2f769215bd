//! No decision without its entry (issue #32, item 2): values an entry bundle could not frame
//! (over 65,535 bytes) are cut, with the full value's length and SHA-256, so a 70 KB action, a
//! 40 KB path and an oversized refusal each leave exactly one entry, in every mode.

use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{Gateway, Options, PythonServer, agent, json, policy, tempdir};

const READS: &str =
    "name: reads\nrules:\n  - name: reads\n    effect: allow\n    actions: [\"read:*\"]\n";

fn entries(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, body) = gw.get(&format!("/admin/audit{query}"));
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

fn the_entry(gw: &Gateway, trace: &str) -> Value {
    let got = entries(gw, &format!("?traceId={trace}"));
    assert_eq!(got.len(), 1, "exactly one entry for {trace}: {got:?}");
    got[0].clone()
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn assert_cut(entry: &Value, field: &str, full: &str) {
    let kept = entry[field].as_str().unwrap();
    assert!(
        kept.len() <= 2048 && kept.ends_with('…'),
        "{field} is cut: {} bytes",
        kept.len()
    );
    assert!(full.starts_with(kept.trim_end_matches('…')));
    assert_eq!(entry["truncated"][field]["length"], full.len());
    assert_eq!(entry["truncated"][field]["sha256"], sha256(full));
}

fn assert_valid(gw: &Gateway) {
    let (status, verify) = gw.get("/admin/audit/verify");
    assert_eq!(
        (status, &verify["valid"]),
        (200, &Value::Bool(true)),
        "{verify}"
    );
}

fn start(mode: &str, up: &PythonServer, dir: &std::path::Path) -> (Gateway, String) {
    let gw = Gateway::start_with(
        dir,
        Options::with(vec![
            ("PROXY_TARGET", up.url.clone()),
            ("MODE", mode.to_owned()),
        ]),
    );
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "long-talker", "verified", &[]);
    (gw, token)
}

#[test]
fn a_long_action_and_a_long_path_each_leave_one_entry_in_every_mode() {
    let up = PythonServer::start("upstream.py", &[]);
    for mode in ["enforce", "audit", "bypass"] {
        let dir = tempdir();
        let (gw, token) = start(mode, &up, dir.path());
        let denied = mode == "enforce";

        let action = format!("delete:{}", "x".repeat(70_000));
        let trace = format!("long-action-{mode}");
        let resp = gw
            .raw(Method::GET, "/proxy/check")
            .bearer_auth(&token)
            .header("X-MeshGuard-Action", &action)
            .header("X-MeshGuard-Trace-ID", &trace)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, if denied { 403 } else { 200 }, "{mode}");
        let entry = the_entry(&gw, &trace);
        assert_cut(&entry, "action", &action);

        let object = format!("admin/{}", "p".repeat(40_000));
        let trace = format!("long-path-{mode}");
        let before = up_count(&up);
        let resp = gw
            .raw(Method::DELETE, &format!("/proxy/{object}"))
            .bearer_auth(&token)
            .header("X-MeshGuard-Trace-ID", &trace)
            .send()
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            if denied { 403 } else { 200 },
            "{mode}"
        );
        assert_eq!(
            up_count(&up) - before,
            usize::from(!denied),
            "{mode}: forwarded only when allowed"
        );
        let entry = the_entry(&gw, &trace);
        assert_cut(&entry, "path", &format!("/{object}"));
        assert_cut(&entry, "action", &format!("delete:{object}"));
        let real = if mode == "bypass" { "allow" } else { "deny" };
        assert_eq!(entry["decision"], real, "{mode}: the real decision");
        assert_valid(&gw);
    }
}

fn up_count(up: &PythonServer) -> usize {
    reqwest::blocking::get(format!("{}/__received", up.url))
        .unwrap()
        .json::<Vec<Value>>()
        .unwrap()
        .len()
}

/// 302 calls without a token, the second of them oversized (it is the one the window's
/// aggregate row is built from): every one is accounted for, in own rows and aggregate counts.
#[test]
fn an_oversized_refusal_does_not_spoil_the_aggregate_of_its_window() {
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("AUDIT_REFUSAL_WINDOW_SECONDS", "1".into())]),
    );
    let huge = format!("read:{}", "h".repeat(70_000));
    let refused = |action: &str, trace: &str| {
        let (status, _) = json(
            gw.raw(Method::GET, "/proxy/check")
                .header("X-MeshGuard-Action", action)
                .header("X-MeshGuard-Trace-ID", trace)
                .send()
                .unwrap(),
        );
        assert_eq!(status, 401);
    };
    refused("read:x", "first");
    refused(&huge, &"t".repeat(9_000));
    for i in 0..300 {
        refused("read:x", &format!("later-{i}"));
    }
    // The windows close every second; wait for the last one's row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows: Vec<Value> = entries(&gw, "?limit=1000")
            .into_iter()
            .filter(|e| e["event"] == "bypass_attempt")
            .collect();
        let accounted: u64 = rows
            .iter()
            .map(|e| e["meta"]["aggregate"]["count"].as_u64().unwrap_or(1))
            .sum();
        if accounted == 302 {
            let cut = rows
                .iter()
                .find(|e| e["truncated"]["action"]["length"] == huge.len())
                .unwrap_or_else(|| panic!("the oversized call's row, cut: {rows:?}"));
            assert!(cut["action"].as_str().unwrap().len() <= 2048);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && accounted < 302,
            "{accounted} of 302 refused calls accounted for: {rows:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_valid(&gw);
}
