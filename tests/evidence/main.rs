//! Evidence a regulator can check (issue #16): the gateway's SIEM egress into a real rsyslog, over
//! TCP and TLS, that never holds a decision back and misses nothing once the SIEM is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

#[path = "../support/mod.rs"]
mod support;

use meshguard_testkit::rsyslog::Rsyslog;
use meshguard_testkit::{copy_dir, free_port, wait_for};
use support::Gateway;

/// The value of `name` in a line's structured data.
fn param<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

/// The seqs of the audit messages received, in arrival order.
fn audit_seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("audit"))
        .filter_map(|l| param(l, "seq")?.parse().ok())
        .collect()
}

const POLICY: &str =
    "name: reads\nrules:\n  - name: reads-only\n    effect: allow\n    actions: [\"read:*\"]\n";

fn gateway(dir: &Path, siem_url: &str, extra: &[(&str, std::ffi::OsString)]) -> Gateway {
    let mut env: Vec<(&str, std::ffi::OsString)> = vec![
        ("SIEM_SYSLOG_URL", siem_url.into()),
        ("AUDIT_ORIGIN", "gw1.site.example/meshguard-audit".into()),
        ("RATE_LIMIT_RPM", "0".into()),
        ("POLICIES_DIR", dir.join("policies").into()),
    ];
    env.extend(extra.iter().cloned());
    Gateway::spawn(dir, &env)
}

/// The `reads` policy, then as the new agent `agent`: `read:<what>` allowed, `write:<what>`
/// denied, and a call with a forged token (a bypass attempt, denied with a critical alert).
fn three_decisions(gw: &Gateway, agent: &str, what: &str) {
    let (s, body) = gw.admin(
        reqwest::Method::POST,
        "/admin/policies",
        Some(json!({"name": "reads", "content": POLICY})),
    );
    assert_eq!(s, 201, "{body}");
    let token = gw.agent(agent, "verified");
    assert_eq!(gw.check(&token, &format!("read:{what}")), 200);
    assert_eq!(gw.check(&token, &format!("write:{what}")), 403);
    assert_eq!(gw.check("forged.token.value", &format!("read:{what}")), 401);
}

fn siem_status(gw: &Gateway) -> Value {
    gw.get("/admin/siem")
}

#[test]
fn a_denial_and_its_alert_reach_rsyslog_as_rfc5424_with_structured_data() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(&tmp.path().join("rsyslog"), false);
    let gw = gateway(
        &tmp.path().join("gw"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[],
    );
    three_decisions(&gw, "siem-bot", "reports");

    wait_for("the bypass attempt's alert in rsyslog", || {
        rs.lines()
            .iter()
            .any(|l| l.contains(" alert ") && l.contains("event=\"bypass_attempt\""))
    });
    let lines = rs.lines();
    let deny = lines
        .iter()
        .find(|l| l.contains(" audit ") && l.contains("action=\"write:reports\""))
        .unwrap_or_else(|| panic!("the denial as an audit message: {lines:#?}"));
    // log audit (13) at warning (4); our hostname and app; every field a SIEM filters on.
    assert!(
        deny.starts_with("108 gw1.site.example meshguard audit [meshguard@32473 "),
        "{deny}"
    );
    for (k, v) in [
        ("decision", "deny"),
        ("agentName", "siem-bot"),
        ("rule", ""),
        ("mode", "enforce"),
    ] {
        if !v.is_empty() {
            assert_eq!(param(deny, k), Some(v), "{k} in {deny}");
        }
    }
    // The message is the entry itself, as the log hashed it.
    let json_at = deny.find('{').expect("the entry's JSON");
    let entry: Value = serde_json::from_str(&deny[json_at..]).unwrap();
    assert_eq!(entry["decision"], "deny");
    assert_eq!(param(deny, "id"), entry["id"].as_str());

    let allow = lines
        .iter()
        .find(|l| l.contains(" audit ") && l.contains("action=\"read:reports\""))
        .expect("the allowed call too");
    assert!(
        allow.starts_with("110 "),
        "log audit, informational: {allow}"
    );
    assert_eq!(param(allow, "rule"), Some("reads-only"));

    // The denial's alert (log alert = 14, warning) and the bypass attempt's (critical).
    let alert = lines
        .iter()
        .find(|l| l.contains(" alert ") && param(l, "id") == entry["id"].as_str())
        .expect("the denial's alert");
    assert!(alert.starts_with("116 "), "{alert}");
    let bypass = lines
        .iter()
        .find(|l| l.contains(" alert ") && l.contains("event=\"bypass_attempt\""))
        .unwrap();
    assert!(bypass.starts_with("114 "), "log alert, critical: {bypass}");
    assert_eq!(param(bypass, "severity"), Some("critical"));
    let bypass_audit = lines
        .iter()
        .find(|l| l.contains(" audit ") && param(l, "id") == param(bypass, "id"))
        .expect("the bypass attempt's deny event");
    assert_eq!(param(bypass_audit, "decision"), Some("deny"));
}

#[test]
fn over_tls_nothing_is_missed_while_the_siem_is_down_or_the_gateway_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::start(&tmp.path().join("rsyslog"), true);
    let dir = tmp.path().join("gw");
    let url = format!("tls://localhost:{}", rs.port);
    let ca: std::ffi::OsString = tmp.path().join("rsyslog/ca.pem").into();
    let gw = gateway(&dir, &url, &[("SIEM_CA_FILE", ca.clone())]);
    let token = gw.agent("tls-bot", "verified");
    for _ in 0..5 {
        assert_eq!(gw.check(&token, "write:x"), 403);
    }
    let caught_up = |gw: &Gateway| {
        let s = siem_status(gw);
        s["lag"] == 0 && s["durable"].as_u64() > Some(0)
    };
    wait_for("the SIEM to catch up", || caught_up(&gw));
    assert_eq!(siem_status(&gw)["connected"], true);

    // The SIEM goes down: decisions are still answered, and the forwarder says it is behind.
    rs.stop();
    for _ in 0..20 {
        assert_eq!(gw.check(&token, "write:x"), 403);
    }
    wait_for("the forwarder to notice", || {
        let s = siem_status(&gw);
        s["connected"] == false && s["lag"].as_u64() > Some(0)
    });
    let status = siem_status(&gw);
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&rs.port.to_string())),
        "{status}"
    );

    // Back: everything after the cursor arrives.
    rs.restart();
    wait_for("the SIEM to catch up after its restart", || caught_up(&gw));
    let durable = siem_status(&gw)["durable"].as_u64().unwrap();
    let seqs = audit_seqs(&rs.lines());
    for seq in 1..=durable {
        assert!(
            seqs.contains(&seq),
            "seq {seq} never reached the SIEM: {seqs:?}"
        );
    }

    // The gateway dies (kill -9) and starts again: it resumes from its cursor, not from the start.
    drop(gw);
    let cursor: u64 = std::fs::read_to_string(dir.join("siem.cursor"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        cursor > 0 && cursor <= durable,
        "cursor {cursor}, log {durable}"
    );
    let gw = gateway(&dir, &url, &[("SIEM_CA_FILE", ca)]);
    assert_eq!(gw.check(&token, "write:after-restart"), 403);
    wait_for("the decision after the restart", || {
        rs.lines()
            .iter()
            .any(|l| l.contains("action=\"write:after-restart\""))
    });
    let seqs = audit_seqs(&rs.lines());
    let first_seen = seqs.iter().filter(|s| **s == 1).count();
    assert_eq!(
        first_seen, 1,
        "the first entry was sent again after the restart: {seqs:?}"
    );
    let durable = siem_status(&gw)["durable"].as_u64().unwrap();
    for seq in 1..=durable {
        assert!(
            seqs.contains(&seq),
            "seq {seq} never reached the SIEM: {seqs:?}"
        );
    }
}

#[test]
fn a_siem_whose_certificate_is_not_trusted_gets_nothing_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(&tmp.path().join("rsyslog"), true);
    // No SIEM_CA_FILE: the test CA is not among the system's roots.
    let gw = gateway(
        &tmp.path().join("gw"),
        &format!("tls://localhost:{}", rs.port),
        &[],
    );
    let token = gw.agent("untrusting-bot", "verified");
    assert_eq!(gw.check(&token, "write:x"), 403, "decisions go on");
    wait_for("the TLS failure to be reported", || {
        siem_status(&gw)["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("TLS") && e.contains("certificate"))
    });
    assert!(
        audit_seqs(&rs.lines()).is_empty(),
        "an unverified SIEM received entries"
    );
}

const EXPORT_PASSPHRASE: &str = "evidence-exporter-passphrase-for-tests";

/// `meshguard-bundle` with the exporter's passphrase and the admin token in its environment.
fn bundle(args: &[&str]) -> (i32, String, String) {
    bundle_in(&[], args)
}

/// The same, run through `prefix` (e.g. `unshare -n`).
fn bundle_in(prefix: &[&str], args: &[&str]) -> (i32, String, String) {
    let exe = support::bins(&["meshguard-bundle"]).join("meshguard-bundle");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args(args)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", EXPORT_PASSPHRASE)
        .env("MESHGUARD_ADMIN_TOKEN", support::ADMIN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two independent validators' verdict on an OSCAL document (`xtask tools` installs both):
/// compliance-trestle's models (its exit status and its `VALID:` line) and NIST's
/// metaschema through the `oscal` package (`validate_oscal.py`, offline).
fn oscal_validates(file: &Path, model: &str) -> (bool, String) {
    let tools = std::env::var_os("MESHGUARD_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let trestle = tools.join("trestle/bin/trestle");
    assert!(
        trestle.is_file(),
        "{} is missing: run `cargo xtask tools`",
        trestle.display()
    );
    let out = Command::new(trestle)
        .args(["partial-object-validate", "-f"])
        .arg(file)
        .args(["-e", model])
        .current_dir(file.parent().unwrap())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let trestle_ok = out.status.success() && text.contains("VALID:") && !text.contains("ERROR");
    let python = tools.join("oscal/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask tools`",
        python.display()
    );
    let nist = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("evidence/validate_oscal.py"))
        .arg(file)
        .arg(model)
        .output()
        .unwrap();
    let nist_text = format!(
        "{}{}",
        String::from_utf8_lossy(&nist.stdout),
        String::from_utf8_lossy(&nist.stderr)
    );
    (
        trestle_ok && nist.status.success(),
        format!("compliance-trestle:\n{text}\nNIST OSCAL metaschema:\n{nist_text}"),
    )
}

/// An alert webhook that takes everything (200), on a free port: its URL.
fn webhook_sink() -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // Read the head and the body its Content-Length announces.
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

/// A site with a witness and a SIEM: a denial, a bypass attempt and a policy change, the
/// checkpoint cosigned. Returns (gateway, rsyslog, witness, witness vkey, log vkey).
fn witnessed_site(dir: &Path) -> (Gateway, Rsyslog, support::WitnessCli, String, String) {
    let rs = Rsyslog::start(&dir.join("rsyslog"), false);
    let w = support::WitnessCli {
        dir: tempfile::tempdir().unwrap(),
    };
    let (code, witness_vkey, err) = w.run(&["init", "--name", "witness.site.example/w1"]);
    assert_eq!(code, 0, "{err}");
    let witness_vkey = witness_vkey.trim().to_owned();
    let gw = gateway(
        &dir.join("gw"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[
            ("AUDIT_WITNESSES", witness_vkey.clone().into()),
            ("ALERT_WEBHOOK_URL", webhook_sink().into()),
        ],
    );
    three_decisions(&gw, "ledger-bot", "ledger");
    wait_for("both denials' alerts delivered", || delivered(&gw) >= 2);
    let (note, log_vkey) = gw.checkpoint();
    let (code, _, err) = w.run(&["trust", &log_vkey]);
    assert_eq!(code, 0, "{err}");
    let (code, response, err) = w.cosign(&gw.request(0));
    assert_eq!(code, 0, "{err}");
    let (s, added) = gw.add_cosignatures(&response);
    assert_eq!(s, 200, "{added}");
    assert!(note.lines().nth(1).is_some());
    (gw, rs, w, witness_vkey, log_vkey)
}

/// Alert deliveries the gateway records as delivered.
fn delivered(gw: &Gateway) -> usize {
    gw.get("/admin/alerts/deliveries?limit=1000")["deliveries"]
        .as_array()
        .map_or(0, |d| {
            d.iter().filter(|x| x["outcome"] == "delivered").count()
        })
}

fn today_window() -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = |secs: u64| {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (day(now - 86_400), day(now + 86_400))
}

/// Acceptance tests 1, 3 and 4 of the product page: a policy denial appears in the audit trail,
/// the SIEM, the evidence bundle and the offline verification transcript; a bypass attempt is
/// a deny event with a critical alert; the bundle verifies with no network (`unshare -n`), and
/// its OSCAL assessment results pass compliance-trestle.
#[test]
fn a_denial_is_in_the_audit_trail_the_siem_the_evidence_bundle_and_the_offline_transcript() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (gw, rs, _w, witness_vkey, log_vkey) = witnessed_site(p);
    let id = the_denial_in_the_trail_the_siem_and_the_alerts(&gw, &rs);
    let (secret, public) = exporter_key(&p.join("keys"));
    let out = p.join("evidence-fedramp");
    let (code, said, err) = export(&gw, "fedramp-moderate", &out, &secret);
    assert_eq!(code, 0, "{err}");
    assert!(
        said.contains("cosigned by witness.site.example/w1"),
        "{said}"
    );
    let entries = std::fs::read_to_string(out.join("audit/entries.jsonl")).unwrap();
    assert!(entries.contains(&id), "the denial in the bundle");
    finra_checks_the_cosignature_with_the_configured_witness_key(&gw, p, &secret);
    the_bundle_holds_the_alert_and_the_policy_in_force(&out, &id);
    the_oscal_findings_are_what_the_period_shows(&out);
    stock_minisign_and_sha256sum_accept_the_bundle(&out, &public);
    let keys = Keys {
        public: &public,
        log: &log_vkey,
        witness: &witness_vkey,
    };
    the_offline_transcript_shows_the_denial_and_the_bypass(p, &out, &keys, &id);
    verify_is_strict_about_witnesses(&out, &keys);
    let altered = altered_and_extended_bundles_fail_naming_the_check(p, &out, &public);
    the_stock_check_refuses_a_rewritten_sums_file_and_an_added_file(p, &out, &altered, &public);
}

/// The keys an evidence bundle is verified with: the exporter's public key, the log's key and
/// the witness's.
struct Keys<'a> {
    public: &'a Path,
    log: &'a str,
    witness: &'a str,
}

/// `evidence verify` of `dir` with the exporter's key and `extra` arguments.
fn verify_bundle(dir: &Path, public: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "evidence",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    bundle(&args)
}

/// The denial of write:ledger is in the audit trail, in rsyslog and among the delivered
/// alerts. Returns its entry id.
fn the_denial_in_the_trail_the_siem_and_the_alerts(gw: &Gateway, rs: &Rsyslog) -> String {
    let audit = gw.get("/admin/audit?decision=deny");
    let denial = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "write:ledger")
        .unwrap_or_else(|| panic!("the denial in the audit trail: {audit}"))
        .clone();
    let id = denial["id"].as_str().unwrap().to_owned();
    wait_for("the denial in rsyslog", || {
        rs.lines().iter().any(|l| param(l, "id") == Some(&id))
    });
    wait_for("the denial's alert delivered", || {
        gw.get("/admin/alerts/deliveries")["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["entryId"] == id.as_str() && d["outcome"] == "delivered")
    });
    id
}

/// 17a-4(f) asks for a party outside the site: the cosignature is verified with the witness
/// key the log's own configuration entry names (not merely counted).
fn finra_checks_the_cosignature_with_the_configured_witness_key(
    gw: &Gateway,
    p: &Path,
    secret: &Path,
) {
    let finra = p.join("evidence-finra");
    let (code, _, err) = export(gw, "finra", &finra, secret);
    assert_eq!(code, 0, "{err}");
    let controls: Value =
        serde_json::from_slice(&std::fs::read(finra.join("controls.json")).unwrap()).unwrap();
    let witnessed = controls["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["controlId"] == "finra-17a-4.f")
        .unwrap()["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requirement"].as_str().unwrap().contains("cosigned"))
        .unwrap()
        .clone();
    assert_eq!(witnessed["state"], "met", "{witnessed}");
    assert_eq!(
        (
            witnessed["numbers"]["validCosignatures"].as_u64(),
            witnessed["numbers"]["witnessKeysConfigured"].as_u64()
        ),
        (Some(1), Some(1)),
        "{witnessed}"
    );
}

/// The bundle holds the denial's delivered alert and the policy snapshot that was in force.
fn the_bundle_holds_the_alert_and_the_policy_in_force(out: &Path, id: &str) {
    let deliveries: Value =
        serde_json::from_slice(&std::fs::read(out.join("alerts/deliveries.json")).unwrap())
            .unwrap();
    assert!(
        deliveries["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["entryId"] == id && d["outcome"] == "delivered"),
        "the denial's alert delivery in the bundle: {deliveries}"
    );
    let versions: Value =
        serde_json::from_slice(&std::fs::read(out.join("policies/versions.json")).unwrap())
            .unwrap();
    let active = versions["active"].clone();
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == active),
        "the snapshot in force is among the period's versions: {versions}"
    );
}

/// The OSCAL assessment results pass both validators, and each finding is what the period's
/// data shows, with its numbers: this site alerts and logs, but names no change approvers and
/// runs no egress proxy.
fn the_oscal_findings_are_what_the_period_shows(out: &Path) {
    let (ok, text) = oscal_validates(
        &out.join("oscal/assessment-results.json"),
        "assessment-results",
    );
    assert!(
        ok,
        "a validator refused the OSCAL assessment results:\n{text}"
    );
    let oscal: Value =
        serde_json::from_slice(&std::fs::read(out.join("oscal/assessment-results.json")).unwrap())
            .unwrap();
    let findings = oscal["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap();
    for (control, state, says) in [
        ("au-2", "satisfied", "3 decisions, 1 allowed and 2 denied"),
        ("au-9", "satisfied", "rebuild the root"),
        (
            "au-6",
            "satisfied",
            "each of the 2 denials has an alert a channel accepted",
        ),
        (
            "cm-3",
            "not-satisfied",
            "no signed approver list (CHANGE_APPROVERS) was in force",
        ),
        ("sc-7", "not-satisfied", "ran without the egress proxy"),
    ] {
        let f = findings
            .iter()
            .find(|f| f["target"]["target-id"] == format!("{control}_obj"))
            .unwrap_or_else(|| panic!("a finding for {control}"));
        assert_eq!(f["target"]["status"]["state"], state, "{f}");
        assert!(
            f["description"].as_str().unwrap_or_default().contains(says),
            "{control}: {f}"
        );
    }
}

/// The signed manifest with the stock minisign, and its files with sha256sum (not our code).
fn stock_minisign_and_sha256sum_accept_the_bundle(out: &Path, public: &Path) {
    let signed = Command::new("minisign")
        .arg("-Vm")
        .arg(out.join("MANIFEST.json"))
        .arg("-p")
        .arg(public)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "minisign refused the manifest's signature: {}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let sums = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
}

/// The offline verification transcript, with no network at all (`unshare -n`): VERIFIED, the
/// denial and the bypass attempt's deny event in it, written as printed, and its JSON twin.
fn the_offline_transcript_shows_the_denial_and_the_bypass(
    p: &Path,
    out: &Path,
    keys: &Keys<'_>,
    id: &str,
) {
    let transcript = p.join("verification.txt");
    let (code, said, err) = bundle_in(
        &["unshare", "-n"],
        &[
            "evidence",
            "verify",
            out.to_str().unwrap(),
            "--pubkey",
            keys.public.to_str().unwrap(),
            "--log-key",
            keys.log,
            "--witness",
            keys.witness,
            "--transcript-out",
            transcript.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}{err}");
    assert!(said.contains("RESULT: VERIFIED"), "{said}");
    assert!(
        said.lines()
            .any(|l| l.contains("DENY") && l.contains(id) && l.contains("write:ledger")),
        "the denial in the transcript:\n{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.contains("DENY") && l.contains("bypass_attempt")),
        "the bypass attempt's deny event in the transcript:\n{said}"
    );
    assert_eq!(std::fs::read_to_string(&transcript).unwrap(), said);
    let json: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", transcript.display())).unwrap())
            .unwrap();
    assert_eq!(json["ok"], true);
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{json}"
    );
    assert!(
        json["decisions"]["denials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id)
    );
}

/// Strict: a witness the bundle was not cosigned by fails; with no witness key the
/// cosignatures cannot be checked, so the result is UNVERIFIED, not a pass, unless the caller
/// accepts it by name; one of two witnesses is a quorum of one.
fn verify_is_strict_about_witnesses(out: &Path, keys: &Keys<'_>) {
    let (_, other_witness, _) = support::WitnessCli {
        dir: tempfile::tempdir().unwrap(),
    }
    .run(&["init", "--name", "witness.site.example/w2"]);
    let (code, said, _) = verify_bundle(out, keys.public, &["--witness", other_witness.trim()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL witness cosignatures"), "{said}");
    let (code, said, _) = verify_bundle(out, keys.public, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("NOT RUN witness cosignatures") && said.contains("RESULT: UNVERIFIED"),
        "{said}"
    );
    let (code, said, _) = verify_bundle(out, keys.public, &["--accept-unwitnessed"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("NOT RUN (accepted) witness cosignatures"),
        "{said}"
    );
    let (code, said, _) = verify_bundle(
        out,
        keys.public,
        &[
            "--witness",
            keys.witness,
            "--witness",
            other_witness.trim(),
            "--quorum",
            "1",
        ],
    );
    assert_eq!(code, 0, "one of two is a quorum of one: {said}");
}

/// An altered entry fails the digests, the entries and the inclusion checks; an extra file is
/// named as not in the manifest. Returns the altered copy.
fn altered_and_extended_bundles_fail_naming_the_check(
    p: &Path,
    out: &Path,
    public: &Path,
) -> std::path::PathBuf {
    let altered = p.join("altered");
    copy_dir(out, &altered);
    let entries_path = altered.join("audit/entries.jsonl");
    let text = std::fs::read_to_string(&entries_path).unwrap();
    std::fs::write(
        &entries_path,
        text.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1),
    )
    .unwrap();
    let (code, said, _) = verify_bundle(&altered, public, &[]);
    assert_eq!(code, 1, "{said}");
    for check in ["FAIL file digests", "FAIL audit entries", "FAIL inclusion"] {
        assert!(said.contains(check), "{check}: {said}");
    }
    let extra = p.join("extra");
    copy_dir(out, &extra);
    std::fs::write(extra.join("audit/more.jsonl"), "{}\n").unwrap();
    let (code, said, _) = verify_bundle(&extra, public, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("audit/more.jsonl is in the bundle but not in its manifest"),
        "{said}"
    );
    altered
}

/// The stock-tool check of docs/evidence.md, with minisign, sha256sum, find and cmp only: it
/// passes on the bundle as exported, and fails on an entry altered with SHA256SUMS rewritten to
/// match, and on an added file.
fn the_stock_check_refuses_a_rewritten_sums_file_and_an_added_file(
    p: &Path,
    out: &Path,
    altered: &Path,
    public: &Path,
) {
    assert_eq!(stock_check(out, public), (true, String::new()));
    let rewritten = p.join("rewritten");
    copy_dir(altered, &rewritten);
    let sums = Command::new("sh")
        .args([
            "-c",
            "sha256sum $(cut -c67- SHA256SUMS) > SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS",
        ])
        .current_dir(&rewritten)
        .status()
        .unwrap();
    assert!(sums.success());
    let (ok, said) = stock_check(&rewritten, public);
    assert!(!ok, "a rewritten SHA256SUMS must not pass the stock check");
    assert!(said.contains("minisign"), "{said}");
    let (code, said, _) = verify_bundle(&rewritten, public, &["--accept-unwitnessed"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("FAIL SHA256SUMS"), "{said}");
    let (ok, said) = stock_check(&p.join("extra"), public);
    assert!(!ok, "an added file must not pass the stock check");
    assert!(said.contains("cmp"), "{said}");
}

/// docs/evidence.md's check with stock tools only: the signature of SHA256SUMS (minisign),
/// every file it lists (sha256sum), and no file it does not list (find, cmp). Returns whether
/// it passed and, if not, which step refused.
fn stock_check(bundle: &Path, public: &Path) -> (bool, String) {
    let script = r#"set -e
minisign -Vqm SHA256SUMS -p "$1" || { echo "refused by minisign"; exit 1; }
sha256sum -c --strict --quiet SHA256SUMS || { echo "refused by sha256sum"; exit 1; }
find . -type f ! -name SHA256SUMS ! -name '*.minisig' | sed 's|^\./||' | sort > /tmp/.mg-files-$$
cut -c67- SHA256SUMS | sort | cmp -s - /tmp/.mg-files-$$ || { rm -f /tmp/.mg-files-$$; echo "refused by cmp: the files are not those SHA256SUMS lists"; exit 1; }
rm -f /tmp/.mg-files-$$"#;
    let out = Command::new("sh")
        .args(["-c", script, "stock-check"])
        .arg(public)
        .current_dir(bundle)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// An export that cannot be proven by the site's witnesses is refused, and leaves nothing.
#[test]
fn an_export_with_no_witnessed_checkpoint_is_refused_and_leaves_no_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (gw, _rs, _w, _, _) = witnessed_site(p);
    let token = gw.agent("late-bot", "verified");
    // Entries after the last cosigned checkpoint.
    assert_eq!(gw.check(&token, "write:later"), 403);
    let keys = p.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let secret = keys.join("e.key");
    let (code, _, err) = bundle(&[
        "keys",
        "generate",
        "--secret",
        secret.to_str().unwrap(),
        "--public",
        keys.join("e.pub").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (from, to) = today_window();
    let out = p.join("bundle");
    let export = |profile: &str, extra: &[&str]| {
        let mut args = vec![
            "evidence",
            "export",
            "--gateway",
            &gw.url,
            "--profile",
            profile,
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            out.to_str().unwrap(),
            "--key",
            secret.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        bundle(&args)
    };
    let (code, _, err) = export("soc2", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cosigned by a quorum of the site's witnesses"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bundle"))
        .collect();
    assert!(left.is_empty(), "a refused export left {left:?}");
    let (code, _, err) = export("nist-800-171", &["--allow-unwitnessed"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "unknown evidence profile \"nist-800-171\"; use one of hipaa, fedramp-moderate"
        ),
        "{err}"
    );
    let (code, said, err) = export("soc2", &["--allow-unwitnessed"]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("(not witnessed)"), "{said}");
}

/// Acceptance test 5 of the product page: archive retrieval returns the same root hash and
/// bundle manifest that MeshGuard exported; archived evidence is never replaced, and an edit
/// in the archive is found.
#[test]
fn archive_retrieval_returns_the_root_hash_and_bundle_manifest_that_were_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (gw, _rs, _w, witness_vkey, log_vkey) = witnessed_site(p);
    let (secret, public) = exporter_key(&p.join("keys"));
    let exported = p.join("evidence-finra");
    let (code, _, err) = export(&gw, "finra", &exported, &secret);
    assert_eq!(code, 0, "{err}");
    // More decisions after the export: the archive reaches further than the bundle.
    let token = gw.agent("after-export", "verified");
    assert_eq!(gw.check(&token, "read:ledger"), 200);
    let archive = p.join("archive");
    pull_and_add_the_evidence(&archive, &gw, &log_vkey, &exported, &public);
    let out = p.join("retrieved");
    let got = retrieve_offline(&archive, &out);
    the_retrieved_bundle_is_the_exported_one(&got, &exported, &out, &gw);
    let keys = Keys {
        public: &public,
        log: &log_vkey,
        witness: &witness_vkey,
    };
    let (code, said, _) = verify_bundle(
        &out,
        keys.public,
        &["--log-key", keys.log, "--witness", keys.witness],
    );
    assert_eq!(code, 0, "{said}");
    archived_evidence_is_never_replaced_and_an_edit_is_found(&archive, &exported, &public);
}

/// `audit-archive pull` from the gateway, then `add-evidence` of the exported bundle.
fn pull_and_add_the_evidence(
    archive: &Path,
    gw: &Gateway,
    log_vkey: &str,
    exported: &Path,
    public: &Path,
) {
    let a = archive.to_str().unwrap();
    let (code, _, err) = bundle(&[
        "audit-archive",
        "pull",
        "--dir",
        a,
        "--gateway",
        &gw.url,
        "--vkey",
        log_vkey,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, said, err) = bundle(&[
        "audit-archive",
        "add-evidence",
        "--dir",
        a,
        exported.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        said.contains("archived evidence bundle evidence-finra"),
        "{said}"
    );
}

/// Retrieval, as an auditor would do it later, with no network: what it printed.
fn retrieve_offline(archive: &Path, out: &Path) -> Value {
    let (code, said, err) = bundle_in(
        &["unshare", "-n"],
        &[
            "audit-archive",
            "retrieve",
            "--dir",
            archive.to_str().unwrap(),
            "--evidence",
            "evidence-finra",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&said).unwrap()
}

/// The retrieved manifest is the exported one (sha256sum), the bundle's checkpoint root is the
/// archive's at that size as the gateway signed it, and the archive's root is the gateway's
/// latest checkpoint's.
fn the_retrieved_bundle_is_the_exported_one(
    got: &Value,
    exported: &Path,
    out: &Path,
    gw: &Gateway,
) {
    let manifest = std::fs::read(exported.join("MANIFEST.json")).unwrap();
    let sha = Command::new("sha256sum")
        .arg(exported.join("MANIFEST.json"))
        .output()
        .unwrap();
    let exported_sha = String::from_utf8(sha.stdout).unwrap()[..64].to_owned();
    assert_eq!(got["evidence"]["manifestSha256"], exported_sha.as_str());
    assert_eq!(std::fs::read(out.join("MANIFEST.json")).unwrap(), manifest);
    let note = std::fs::read_to_string(exported.join("audit/checkpoint.note")).unwrap();
    let mut lines = note.lines();
    let (_, size, root) = (lines.next(), lines.next().unwrap(), lines.next().unwrap());
    assert_eq!(got["evidence"]["checkpointSize"].to_string(), size);
    assert_eq!(got["evidence"]["checkpointRoot"], root);
    let (latest, _) = gw.checkpoint();
    let mut lines = latest.lines().skip(1);
    assert_eq!(got["size"].to_string(), lines.next().unwrap());
    assert_eq!(got["root"], lines.next().unwrap());
}

/// WORM: the same bundle is not archived twice and the archive's copy is read-only; someone
/// with root edits it anyway, and verification finds it.
fn archived_evidence_is_never_replaced_and_an_edit_is_found(
    archive: &Path,
    exported: &Path,
    public: &Path,
) {
    use std::os::unix::fs::PermissionsExt as _;
    let a = archive.to_str().unwrap();
    let (code, _, err) = bundle(&[
        "audit-archive",
        "add-evidence",
        "--dir",
        a,
        exported.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("never replaced"), "{err}");
    let held = archive.join("evidence/evidence-finra/audit/entries.jsonl");
    assert_eq!(
        std::fs::metadata(&held).unwrap().permissions().mode() & 0o777,
        0o444
    );
    std::fs::set_permissions(&held, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&held).unwrap();
    std::fs::write(&held, text.replacen("write:ledger", "read:ledger", 1)).unwrap();
    let (code, _, err) = bundle(&["audit-archive", "verify", a]);
    assert_eq!(code, 1);
    assert!(err.contains("evidence-finra does not verify"), "{err}");
}

/// A new exporter key pair in `dir`: (secret, public).
fn exporter_key(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (secret, public) = (dir.join("evidence.key"), dir.join("evidence.pub"));
    let (code, _, err) = bundle(&[
        "keys",
        "generate",
        "--secret",
        secret.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    (secret, public)
}

/// `evidence export` of `profile` for today's window into `out`.
fn export(gw: &Gateway, profile: &str, out: &Path, secret: &Path) -> (i32, String, String) {
    let (from, to) = today_window();
    bundle(&[
        "evidence",
        "export",
        "--gateway",
        &gw.url,
        "--profile",
        profile,
        "--from",
        &from,
        "--to",
        &to,
        "--out",
        out.to_str().unwrap(),
        "--key",
        secret.to_str().unwrap(),
    ])
}

/// ePHI sent by an agent: an SSN in the action, a patient's name and an MRN in the context.
fn ephi_decisions(gw: &Gateway) {
    let (s, body) = gw.admin(
        reqwest::Method::POST,
        "/admin/policies",
        Some(json!({"name": "reads", "content": POLICY})),
    );
    assert_eq!(s, 201, "{body}");
    let token = gw.agent("ehr-bot", "verified");
    let r = gw
        .http
        .post(format!("{}/api/v1/governance/batch", gw.url))
        .bearer_auth(&token)
        .json(&json!({"actions": [
            {"action": "read:patients/078-05-1120", "context": {"patient": "Jane Q. Public", "note": "MRN: 0048213"}},
            {"action": "write:patients/078-05-1120", "resource": "ehr/jane.public@clinic.example"},
        ]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
}

/// HIPAA: with AUDIT_REDACTION=hipaa nothing an agent sends reaches the log, the SIEM or the
/// evidence as ePHI, and the bundle says so; without it the HIPAA export is refused, naming the
/// entry, and writes nothing.
#[test]
fn hipaa_redaction_keeps_ephi_out_of_the_log_the_siem_and_the_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let rs = Rsyslog::start(&p.join("rsyslog"), false);
    let gw = gateway(
        &p.join("gw"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[("AUDIT_REDACTION", "hipaa".into())],
    );
    ephi_decisions(&gw);
    let audit = gw.get("/admin/audit?limit=100").to_string();
    for secret in ["078-05-1120", "Jane", "0048213", "jane.public"] {
        assert!(
            !audit.contains(secret),
            "{secret} in the audit trail: {audit}"
        );
    }
    assert!(audit.contains("read:patients/[REDACTED:ssn]"), "{audit}");
    wait_for("the redacted entries in rsyslog", || {
        rs.lines()
            .iter()
            .any(|l| l.contains("write:patients/[REDACTED:ssn]"))
    });
    let siem = rs.lines().join("\n");
    assert!(
        !siem.contains("078-05-1120") && !siem.contains("Jane"),
        "{siem}"
    );

    let (secret, public) = exporter_key(&p.join("keys"));
    let out = p.join("hipaa");
    let (code, _, err) = export(&gw, "hipaa", &out, &secret);
    assert_eq!(code, 0, "{err}");
    let (code, said, _) = bundle(&[
        "evidence",
        "verify",
        out.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
        // This gateway has no witness: accepted by name, as an auditor would have to.
        "--accept-unwitnessed",
    ]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("PASS ePHI: no recognisable ePHI identifier"),
        "{said}"
    );
    assert!(
        said.contains("CONTROL 164.502(b) (hipaa-164.502.b): SATISFIED: all 3 entries were written under the HIPAA redaction profile"),
        "{said}"
    );
    let (ok, text) = oscal_validates(
        &out.join("oscal/assessment-results.json"),
        "assessment-results",
    );
    assert!(ok, "{text}");

    // The same decisions on a gateway without the profile: the export refuses to write ePHI.
    let plain = gateway(
        &p.join("plain"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[],
    );
    ephi_decisions(&plain);
    let out = p.join("hipaa-plain");
    let (code, _, err) = export(&plain, "hipaa", &out, &secret);
    assert_eq!(code, 1);
    assert!(err.contains("FAIL ePHI") && err.contains("ssn"), "{err}");
    assert!(
        !err.contains("078-05-1120"),
        "the error must not repeat the identifier: {err}"
    );
    assert!(!out.exists());
}

/// FINRA: with the site's signed approver list a policy change without approver and ticket is
/// refused (428) and changes nothing, and one approved by a listed supervisor is taken; the
/// bundle's Rule 3110 finding is satisfied, with its numbers. Where changes went through
/// unapproved and no list was in force, the finding says which, in controls.json, the OSCAL and
/// the transcript.
#[test]
fn finra_supervisory_approval_is_enforced_and_shown_in_the_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let rs = Rsyslog::start(&p.join("rsyslog"), false);
    let url = format!("tcp://127.0.0.1:{}", rs.port);
    let site = p.join("site-keys");
    signed_supervisor_list(&site);
    let gw = gateway(
        &p.join("gw"),
        &url,
        &[
            ("CHANGE_APPROVERS", site.join("approvers.json").into()),
            ("CHANGE_APPROVERS_PUBKEY", site.join("site.pub").into()),
        ],
    );
    let policy = json!({"name": "reads", "content": POLICY});
    only_an_approved_change_is_taken(&gw, &policy);
    let token = gw.agent("trader-bot", "verified");
    assert_eq!(gw.check(&token, "write:orders"), 403);

    let (secret, public) = exporter_key(&p.join("keys"));
    let out = p.join("finra");
    let (code, _, err) = export(&gw, "finra", &out, &secret);
    assert_eq!(code, 0, "{err}");
    let (code, said, _) = verify_bundle(&out, &public, &["--accept-unwitnessed"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("CONTROL Rule 3110 (finra-3110): SATISFIED: 1 policy changes, each with a change ticket and approved by an approver on the site's signed list in force (versions 1)"),
        "{said}"
    );

    // Elsewhere, a change went through with no approval.
    let lax = gateway(&p.join("lax"), &url, &[]);
    let (s, body) = lax.admin(reqwest::Method::POST, "/admin/policies", Some(policy));
    assert_eq!(s, 201, "{body}");
    let token = lax.agent("trader-bot", "verified");
    assert_eq!(lax.check(&token, "write:orders"), 403);
    let out = p.join("finra-lax");
    let (code, _, err) = export(&lax, "finra", &out, &secret);
    assert_eq!(
        code, 0,
        "the bundle is authentic; the finding is what fails: {err}"
    );
    the_unapproved_change_is_not_satisfied(&out, &public);
    a_finding_marked_satisfied_anyway_is_caught(&out, &public);
}

/// Runs the stock minisign in `dir`; a failure fails the test with its arguments and stderr.
fn minisign_in(dir: &Path, args: &[&str]) {
    let out = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "minisign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In `site`, with minisign: the site's key and a signed approver list (version 1) naming
/// `supervisor@firm.example`.
fn signed_supervisor_list(site: &Path) {
    std::fs::create_dir_all(site).unwrap();
    let run = |args: &[&str]| minisign_in(site, args);
    run(&["-G", "-W", "-p", "site.pub", "-s", "site.key"]);
    std::fs::write(
        site.join("approvers.json"),
        json!({"format": "meshguard-change-approvers/v1", "version": 1, "approvers": ["supervisor@firm.example"]}).to_string(),
    )
    .unwrap();
    run(&["-S", "-s", "site.key", "-m", "approvers.json"]);
}

/// With an approver list in force, a change with no approver and ticket is refused (428, and
/// nothing is stored); one approved by a listed approver with a ticket is taken.
fn only_an_approved_change_is_taken(gw: &Gateway, policy: &Value) {
    let (s, body) = gw.admin(
        reqwest::Method::POST,
        "/admin/policies",
        Some(policy.clone()),
    );
    assert_eq!(s, 428, "{body}");
    assert!(
        body.contains("X-MeshGuard-Approver and X-MeshGuard-Change-Ticket"),
        "{body}"
    );
    assert_eq!(
        gw.get("/admin/policies")["policies"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let r = gw
        .http
        .post(format!("{}/admin/policies", gw.url))
        .header("X-Admin-Token", support::ADMIN)
        .header("X-MeshGuard-Approver", "supervisor@firm.example")
        .header("X-MeshGuard-Change-Ticket", "CHG-1042")
        .json(policy)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// The lax site's bundle verifies, and says Rule 3110 is not satisfied, with the numbers, in
/// the transcript and in the OSCAL finding.
fn the_unapproved_change_is_not_satisfied(out: &Path, public: &Path) {
    let (code, said, _) = verify_bundle(out, public, &["--accept-unwitnessed"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("CONTROL Rule 3110 (finra-3110): NOT SATISFIED: no signed approver list (CHANGE_APPROVERS) was in force in 1 of the configurations over the period (configuration entries seq 1); 1 of 1 policy changes name no approver or no change ticket"),
        "{said}"
    );
    let oscal: Value =
        serde_json::from_slice(&std::fs::read(out.join("oscal/assessment-results.json")).unwrap())
            .unwrap();
    let finding = oscal["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["target"]["target-id"] == "finra-3110_obj")
        .unwrap()
        .clone();
    assert_eq!(
        finding["target"]["status"]["state"], "not-satisfied",
        "{finding}"
    );
}

/// An exporter who marks the finding satisfied anyway is caught by the verifier.
fn a_finding_marked_satisfied_anyway_is_caught(out: &Path, public: &Path) {
    let controls_path = out.join("controls.json");
    let text = std::fs::read_to_string(&controls_path).unwrap();
    std::fs::write(
        &controls_path,
        text.replace("\"state\": \"not-satisfied\"", "\"state\": \"satisfied\""),
    )
    .unwrap();
    let (code, said, _) = verify_bundle(out, public, &["--accept-unwitnessed"]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("FAIL control mapping: controls.json does not say what the bundle shows"),
        "{said}"
    );
}

/// FedRAMP-style continuous monitoring: the month's bundle (`--month`); a NIST profile with gaps
/// (air-gapped defense without the installation transcript, CM-14 lacking its evidence; no witness,
/// AU-10; no egress proxy, SC-7) carries an OSCAL plan of action and milestones whose items are
/// linked to the gaps' findings, valid for trestle.
#[test]
fn a_nist_bundle_with_a_gap_plans_it_in_an_oscal_poam() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let rs = Rsyslog::start(&p.join("rsyslog"), false);
    let gw = gateway(&p.join("gw"), &format!("tcp://127.0.0.1:{}", rs.port), &[]);
    three_decisions(&gw, "monthly-bot", "ledger");
    let (secret, public) = exporter_key(&p.join("keys"));
    let month = Command::new("date")
        .args(["-u", "+%Y-%m"])
        .output()
        .unwrap();
    let month = String::from_utf8(month.stdout).unwrap().trim().to_owned();
    let out = p.join("monthly");
    let (code, said, err) = export_month(&gw, "airgapped-defense", &month, &out, &secret);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains(&format!("from {month}-01 to ")), "{said}");
    // This gateway has no witness: accepted by name, as an auditor would have to.
    let (code, said, _) = verify_bundle(&out, &public, &["--accept-unwitnessed"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("CONTROL CM-14 (cm-14): NOT SATISFIED: no installation transcript; the bundle holds no installation transcript (export with --transcript) (not-assessed)"),
        "{said}"
    );
    assert!(
        said.contains("CONTROL AU-10 (au-10): NOT SATISFIED:")
            && said.contains("carries no witness cosignature"),
        "{said}"
    );
    assert!(
        said.contains(
            "PASS POA&M: oscal/poam.json plans for every control not satisfied (AU-10, CM-14, SC-7)"
        ),
        "{said}"
    );
    the_poam_plans_each_gap_against_its_finding(&out);
    let (code, _, err) = export_month(&gw, "soc2", "2026-13", &p.join("bad"), &secret);
    assert_eq!(code, 1);
    assert!(err.contains("not a month such as 2026-11"), "{err}");
}

/// `evidence export --month`.
fn export_month(
    gw: &Gateway,
    profile: &str,
    month: &str,
    out: &Path,
    secret: &Path,
) -> (i32, String, String) {
    bundle(&[
        "evidence",
        "export",
        "--gateway",
        &gw.url,
        "--profile",
        profile,
        "--month",
        month,
        "--out",
        out.to_str().unwrap(),
        "--key",
        secret.to_str().unwrap(),
    ])
}

/// The POA&M and the assessment results pass both validators; the POA&M has one item per
/// control not satisfied, CM-14's pointing at its finding.
fn the_poam_plans_each_gap_against_its_finding(out: &Path) {
    let (ok, text) = oscal_validates(
        &out.join("oscal/poam.json"),
        "plan-of-action-and-milestones",
    );
    assert!(ok, "{text}");
    let (ok, text) = oscal_validates(
        &out.join("oscal/assessment-results.json"),
        "assessment-results",
    );
    assert!(ok, "{text}");
    let poam: Value =
        serde_json::from_slice(&std::fs::read(out.join("oscal/poam.json")).unwrap()).unwrap();
    let ar: Value =
        serde_json::from_slice(&std::fs::read(out.join("oscal/assessment-results.json")).unwrap())
            .unwrap();
    let finding = ar["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["target"]["target-id"] == "cm-14_obj")
        .unwrap()["uuid"]
        .clone();
    let items = poam["plan-of-action-and-milestones"]["poam-items"]
        .as_array()
        .unwrap();
    assert_eq!(items.len(), 3, "{poam}");
    assert!(
        items
            .iter()
            .any(|i| i["related-findings"][0]["finding-uuid"] == finding),
        "{poam}"
    );
}

/// Sovereign EU: a gateway pinned to a region whose egress proxy refuses a destination in
/// another region (a cross-border transfer). The bundle shows the refusal as a denial and the
/// residency settings as Art. 44 satisfied.
#[test]
fn a_sovereign_eu_bundle_shows_residency_and_the_cross_border_transfer_it_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let run = |args: &[&str]| minisign_in(p, args);
    run(&["-G", "-W", "-p", "egress.pub", "-s", "egress.key"]);
    let doc = json!({"format": "meshguard-egress-allowlist/v1", "version": 1, "destinations": [
        {"host": "api.eu.example", "ports": [443], "region": "eu-west"},
        {"host": "api.us.example", "ports": [443], "region": "us-east"},
    ]});
    std::fs::write(p.join("egress.json"), doc.to_string()).unwrap();
    run(&["-S", "-s", "egress.key", "-m", "egress.json"]);
    let rs = Rsyslog::start(&p.join("rsyslog"), false);
    let egress_port = free_port();
    let gw = gateway(
        &p.join("gw"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[
            ("REGION", "eu-west".into()),
            ("EGRESS_PROXY_PORT", egress_port.to_string().into()),
            ("EGRESS_ALLOWLIST", p.join("egress.json").into()),
            ("EGRESS_ALLOWLIST_PUBKEY", p.join("egress.pub").into()),
            ("EGRESS_REGIONS", "eu-west".into()),
        ],
    );
    three_decisions(&gw, "eu-bot", "ledger");
    a_transfer_outside_the_pinned_region_is_refused(egress_port);
    let system = a_forged_allowlist_is_refused_and_alerted(p, &doc, &gw, &rs);
    the_sovereign_bundle_shows_residency_and_the_refusal(p, &gw, &system);
}

/// A transfer to the US destination, listed but outside the pinned region: refused.
fn a_transfer_outside_the_pinned_region_is_refused(egress_port: u16) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", egress_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "CONNECT api.us.example:443 HTTP/1.1\r\nHost: api.us.example:443\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

/// An allowlist changed on disk without its publisher's signature: refused, the signed one
/// kept, and the system alert recorded in the log and sent to the SIEM like any entry.
/// Returns the alert's entry.
fn a_forged_allowlist_is_refused_and_alerted(
    p: &Path,
    doc: &Value,
    gw: &Gateway,
    rs: &Rsyslog,
) -> Value {
    let forged = doc.to_string().replace("api.us.example", "exfil.example");
    std::fs::write(p.join("egress.json"), forged).unwrap();
    wait_for("the system alert in rsyslog", || {
        rs.lines().iter().any(|l| {
            l.contains(" alert ")
                && l.contains("event=\"system_alert\"")
                && l.contains("title=\"Egress Allowlist Refused\"")
        })
    });
    let system = gw.get("/admin/audit?limit=100")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "system_alert")
        .cloned()
        .expect("the system alert as an audit entry");
    assert_eq!(
        system["meta"]["title"], "Egress Allowlist Refused",
        "{system}"
    );

    system
}

/// The Sovereign EU bundle verifies offline: Art. 44 satisfied, the refused transfer and the
/// system alert in it, the pinned regions in its settings, and its OSCAL valid.
fn the_sovereign_bundle_shows_residency_and_the_refusal(p: &Path, gw: &Gateway, system: &Value) {
    let (secret, public) = exporter_key(&p.join("keys"));
    let out = p.join("sovereign");
    let (code, _, err) = export(gw, "sovereign-eu", &out, &secret);
    assert_eq!(code, 0, "{err}");
    let (code, said, _) = bundle(&[
        "evidence",
        "verify",
        out.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
        // This gateway has no witness: accepted by name, as an auditor would have to.
        "--accept-unwitnessed",
    ]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("CONTROL Art. 44 (gdpr-art44): SATISFIED"),
        "{said}"
    );
    assert!(
        said.lines().any(|l| l.contains("DENY")
            && l.contains("event egress_denied")
            && l.contains("api.us.example")),
        "the refused transfer in the transcript:\n{said}"
    );
    let entries = std::fs::read_to_string(out.join("audit/entries.jsonl")).unwrap();
    assert!(
        entries.contains(system["id"].as_str().unwrap()),
        "the system alert in the bundle"
    );
    let settings: Value =
        serde_json::from_slice(&std::fs::read(out.join("gateway.json")).unwrap()).unwrap();
    assert_eq!(settings["region"], "eu-west");
    assert_eq!(settings["egressRegions"], json!(["eu-west"]));
    let (ok, text) = oscal_validates(
        &out.join("oscal/assessment-results.json"),
        "assessment-results",
    );
    assert!(ok, "{text}");
}

/// Issue #31: each control family is decided by the period's own data, and says the numbers.
/// Two sites make the same calls: one where every control holds (alerts delivered, a signed
/// approver list and an approved change, the egress proxy on a signed allowlist, region
/// pinned), and one with a known defect per family (the alert channel refuses, no approver
/// list and an unapproved change, no egress proxy, no region). The FedRAMP Moderate and
/// Sovereign EU bundles of each say satisfied, or not-satisfied, with the counts.
#[test]
fn each_control_family_is_decided_by_the_periods_data_with_its_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    signed_site_lists(p);
    let rs = Rsyslog::start(&p.join("rsyslog"), false);
    let (good, bad) = a_good_and_a_bad_site(p, &format!("tcp://127.0.0.1:{}", rs.port));
    for (gw, approver) in [(&good, "cab-chair"), (&bad, "")] {
        change_and_decide(gw, approver);
    }
    wait_for("the good site's denial alert delivered", || {
        delivered(&good) >= 1
    });
    wait_for("the bad site's alert given up", || {
        bad.get("/admin/alerts/deliveries?limit=100")["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["outcome"] == "undelivered"))
    });
    let (secret, public) = exporter_key(&p.join("keys"));
    let exporter = Exporter {
        dir: p,
        secret: &secret,
        public: &public,
    };
    let fed_good = exporter.controls(&good, "fedramp-moderate", "fed-good");
    let fed_bad = exporter.controls(&bad, "fedramp-moderate", "fed-bad");
    let eu_good = exporter.controls(&good, "sovereign-eu", "eu-good");
    let eu_bad = exporter.controls(&bad, "sovereign-eu", "eu-bad");
    every_profile_decides_each_family_with_numbers(&exporter, &good, &bad);
    alerting_counts_denials_and_deliveries(&fed_good, &fed_bad);
    change_control_counts_approved_changes(&fed_good, &fed_bad);
    boundary_and_residency_count_the_proxy_and_regions(&fed_good, &fed_bad, &eu_good, &eu_bad);
    // Logging holds on both: the same three decisions, counted.
    for doc in [&fed_good, &fed_bad] {
        let (state, n, says) = control(doc, "au-2");
        assert_eq!(state, "satisfied", "{says}");
        assert_eq!(
            (n["allowed"].as_u64(), n["denied"].as_u64()),
            (Some(1), Some(1)),
            "{n}"
        );
    }
}

/// In `p`, with minisign: the site's key (`site.pub`, `site.key`), a signed egress allowlist
/// (version 7, one EU destination) and a signed approver list (version 2, `cab-chair`).
fn signed_site_lists(p: &Path) {
    let run = |args: &[&str]| minisign_in(p, args);
    run(&["-G", "-W", "-p", "site.pub", "-s", "site.key"]);
    let allowlist = json!({"format": "meshguard-egress-allowlist/v1", "version": 7, "destinations": [
        {"host": "api.eu.example", "ports": [443], "region": "eu-west"},
    ]});
    std::fs::write(p.join("egress.json"), allowlist.to_string()).unwrap();
    run(&["-S", "-s", "site.key", "-m", "egress.json"]);
    let approvers = json!({"format": "meshguard-change-approvers/v1", "version": 2, "approvers": ["cab-chair"]});
    std::fs::write(p.join("approvers.json"), approvers.to_string()).unwrap();
    run(&["-S", "-s", "site.key", "-m", "approvers.json"]);
}

/// The good site (alerts delivered, approver list, egress proxy on the allowlist, region
/// pinned) and the bad one (an alert channel that is not there, nothing else).
fn a_good_and_a_bad_site(p: &Path, siem: &str) -> (Gateway, Gateway) {
    let good = gateway(
        &p.join("good"),
        siem,
        &[
            ("ALERT_WEBHOOK_URL", webhook_sink().into()),
            ("CHANGE_APPROVERS", p.join("approvers.json").into()),
            ("CHANGE_APPROVERS_PUBKEY", p.join("site.pub").into()),
            ("REGION", "eu-west".into()),
            ("EGRESS_PROXY_PORT", free_port().to_string().into()),
            ("EGRESS_ALLOWLIST", p.join("egress.json").into()),
            ("EGRESS_ALLOWLIST_PUBKEY", p.join("site.pub").into()),
            ("EGRESS_REGIONS", "eu-west".into()),
        ],
    );
    // A receiver that is not there: every attempt fails, quickly.
    let refused = format!("http://127.0.0.1:{}/hook", free_port());
    let bad = gateway(
        &p.join("bad"),
        siem,
        &[
            ("ALERT_WEBHOOK_URL", refused.into()),
            ("ALERT_RETRY_ATTEMPTS", "1".into()),
        ],
    );
    (good, bad)
}

/// One policy change (approved by `approver` with a ticket, unless it is empty), then one
/// allowed and one denied decision.
fn change_and_decide(gw: &Gateway, approver: &str) {
    let mut req = gw
        .http
        .post(format!("{}/admin/policies", gw.url))
        .header("X-Admin-Token", support::ADMIN)
        .json(&json!({"name": "reads", "content": POLICY}));
    if !approver.is_empty() {
        req = req
            .header("X-MeshGuard-Approver", approver)
            .header("X-MeshGuard-Change-Ticket", "CHG-77");
    }
    assert_eq!(req.send().unwrap().status(), 201);
    let token = gw.agent("family-bot", "verified");
    assert_eq!(gw.check(&token, "read:ledger"), 200);
    assert_eq!(gw.check(&token, "write:ledger"), 403);
}

/// Exports evidence bundles with one key into one directory.
struct Exporter<'a> {
    dir: &'a Path,
    secret: &'a Path,
    public: &'a Path,
}

impl Exporter<'_> {
    /// The `controls.json` of a bundle of `profile` exported into `name`, once `evidence
    /// verify` has recomputed every finding.
    fn controls(&self, gw: &Gateway, profile: &str, name: &str) -> Value {
        let out = self.dir.join(name);
        let (code, _, err) = export(gw, profile, &out, self.secret);
        assert_eq!(code, 0, "{err}");
        let (code, said, _) = verify_bundle(&out, self.public, &["--accept-unwitnessed"]);
        assert_eq!(code, 0, "verify recomputes every finding: {said}");
        serde_json::from_slice(&std::fs::read(out.join("controls.json")).unwrap()).unwrap()
    }
}

/// A control's state, its first requirement's numbers and its finding.
fn control(doc: &Value, id: &str) -> (String, Value, String) {
    let c = doc["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["controlId"] == id)
        .unwrap_or_else(|| panic!("{id} in {doc}"))
        .clone();
    let r = &c["requirements"][0];
    (
        c["state"].as_str().unwrap().to_owned(),
        r["numbers"].clone(),
        r["finding"].as_str().unwrap().to_owned(),
    )
}

/// Every profile: each control of the families with a defect on the bad site (alerting,
/// change, egress, region) is met on the good site and not met on the bad one, its finding
/// stating numbers; the same requirement decides it the same way in every profile, and every
/// profile holds one (FINRA: Rule 3110; air-gapped: SC-7).
fn every_profile_decides_each_family_with_numbers(
    exporter: &Exporter<'_>,
    good: &Gateway,
    bad: &Gateway,
) {
    let families = [
        "every denial alerted and delivered",
        "every policy change approved",
        "egress proxy with a signed allowlist",
        "gateway and egress pinned to regions",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for profile in [
        "hipaa",
        "fedramp-moderate",
        "finra",
        "soc2",
        "iso27001",
        "pci-dss",
        "sovereign-eu",
        "airgapped-defense",
    ] {
        for (site, want) in [(good, "met"), (bad, "not-met")] {
            let doc = exporter.controls(site, profile, &format!("{profile}-{want}"));
            for c in doc["controls"].as_array().unwrap() {
                for r in c["requirements"].as_array().unwrap() {
                    let name = r["requirement"].as_str().unwrap();
                    if !families.iter().any(|f| name.starts_with(f)) {
                        continue;
                    }
                    seen.insert((profile, name.to_owned()));
                    assert_eq!(
                        r["state"], want,
                        "{profile} {}: {}",
                        c["label"], r["finding"]
                    );
                    assert!(
                        r["numbers"].as_object().is_some_and(|n| !n.is_empty())
                            && r["finding"]
                                .as_str()
                                .unwrap()
                                .chars()
                                .any(|ch| ch.is_ascii_digit()),
                        "{profile} {}: a finding with its numbers: {r}",
                        c["label"]
                    );
                }
            }
        }
    }
    let profiles: std::collections::BTreeSet<&str> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(profiles.len(), 8, "{seen:?}");
}

/// Alerting: one denial, delivered, or refused by the channel.
fn alerting_counts_denials_and_deliveries(fed_good: &Value, fed_bad: &Value) {
    let (state, n, _) = control(fed_good, "au-6");
    assert_eq!(state, "satisfied");
    assert_eq!(
        (n["denials"].as_u64(), n["alertedAndDelivered"].as_u64()),
        (Some(1), Some(1)),
        "{n}"
    );
    let (state, n, says) = control(fed_bad, "au-6");
    assert_eq!(state, "not-satisfied", "{says}");
    assert_eq!(
        (n["denials"].as_u64(), n["undelivered"].as_u64()),
        (Some(1), Some(1)),
        "{n}"
    );
    assert!(
        says.contains("1 denials, 0 alerted and delivered; 1 no channel accepted"),
        "{says}"
    );
}

/// Change control: one change, approved by a listed approver, or by nobody with no list.
fn change_control_counts_approved_changes(fed_good: &Value, fed_bad: &Value) {
    let (state, n, says) = control(fed_good, "cm-3");
    assert_eq!(state, "satisfied", "{says}");
    assert_eq!(
        (
            n["policyChanges"].as_u64(),
            n["approvedByListedApprover"].as_u64(),
            n["approverListVersions"].clone()
        ),
        (Some(1), Some(1), json!([2])),
        "{n}"
    );
    let (state, n, says) = control(fed_bad, "cm-3");
    assert_eq!(state, "not-satisfied", "{says}");
    assert_eq!(n["withoutApproverOrTicket"].as_u64(), Some(1), "{n}");
    assert!(
        says.contains("no signed approver list (CHANGE_APPROVERS) was in force"),
        "{says}"
    );
}

/// Boundary protection: the egress proxy on a signed allowlist, or off. Residency: pinned to
/// one region with egress pinned, or not pinned at all.
fn boundary_and_residency_count_the_proxy_and_regions(
    fed_good: &Value,
    fed_bad: &Value,
    eu_good: &Value,
    eu_bad: &Value,
) {
    let (state, n, says) = control(fed_good, "sc-7");
    assert_eq!(state, "satisfied", "{says}");
    assert_eq!(
        (
            n["withoutEgressProxy"].as_u64(),
            n["allowlistVersions"].clone()
        ),
        (Some(0), json!([7])),
        "{n}"
    );
    let (state, n, says) = control(fed_bad, "sc-7");
    assert_eq!(state, "not-satisfied", "{says}");
    assert_eq!(n["withoutEgressProxy"].as_u64(), Some(1), "{n}");
    let (state, n, says) = control(eu_good, "gdpr-art44");
    assert_eq!(state, "satisfied", "{says}");
    assert_eq!(n["gatewayRegions"], json!(["eu-west"]), "{n}");
    let (state, n, says) = control(eu_bad, "gdpr-art44");
    assert_eq!(state, "not-satisfied", "{says}");
    assert_eq!(n["unpinnedConfigurations"].as_u64(), Some(1), "{n}");
}
