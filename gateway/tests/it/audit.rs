//! The audit trail: every decision recorded durably, tampering found, sidecar exports merged.

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, LoopDisk, Options, agent, json, policy, tempdir};

const READS: &str = "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n  - name: deny-admin\n    effect: deny\n    actions: [\"admin:*\"]\n    reason: admin needs a human\n";

/// The entries of `/admin/audit{query}` other than the gateway's own configuration entries (one
/// each start, `every_start_records_the_configuration_in_force`): what the calls recorded.
fn entries(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, body) = gw.get(&format!("/admin/audit{query}"));
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] != "configuration")
        .cloned()
        .collect()
}

#[test]
fn every_decision_is_recorded_with_what_the_sdks_read() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (id, token) = agent(&gw, "reader", "verified", &["ci"]);
    let (status, allowed) = json(
        gw.raw(Method::GET, "/proxy/check")
            .bearer_auth(&token)
            .header("X-MeshGuard-Action", "read:contacts")
            .header("X-MeshGuard-Resource", "contacts/42")
            .header("X-MeshGuard-Trace-ID", "trace-allow-1")
            .header("X-MeshGuard-Meta", r#"{"ticket":"T-1"}"#)
            .send()
            .unwrap(),
    );
    assert_eq!((status, allowed["decision"].as_str()), (200, Some("allow")));
    assert_eq!(gw.check(&token, "admin:drop").0, 403);

    let all = entries(&gw, "");
    assert_eq!(all.len(), 2);
    let (newest, oldest) = (&all[0], &all[1]);
    assert_eq!(
        (newest["action"].as_str(), newest["decision"].as_str()),
        (Some("admin:drop"), Some("deny"))
    );
    assert_eq!(
        (newest["rule"].as_str(), newest["reason"].as_str()),
        (Some("deny-admin"), Some("admin needs a human"))
    );
    assert_eq!(oldest["traceId"], "trace-allow-1");
    assert_eq!(oldest["resource"], "contacts/42");
    assert_eq!(oldest["meta"]["ticket"], "T-1");
    assert_eq!(
        (oldest["agentId"].as_str(), oldest["agentName"].as_str()),
        (Some(id.as_str()), Some("reader"))
    );
    assert_eq!(
        (oldest["policy"].as_str(), oldest["mode"].as_str()),
        (Some("reads"), Some("enforce"))
    );
    assert!(oldest["id"].as_str().unwrap().starts_with("aud_"));
    assert!(oldest["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(oldest["seq"].as_u64().unwrap() < newest["seq"].as_u64().unwrap());

    assert_eq!(entries(&gw, "?decision=deny").len(), 1);
    assert_eq!(
        entries(&gw, &format!("?agentId={id}&action=read:contacts")).len(),
        1
    );
    assert_eq!(entries(&gw, "?agent=reader").len(), 2);
    assert_eq!(entries(&gw, "?traceId=trace-allow-1").len(), 1);
    assert_eq!(entries(&gw, "?limit=1").len(), 1);
    assert_eq!(entries(&gw, "?from=2000-01-01&to=2999-12-31").len(), 2);
    assert_eq!(gw.get("/admin/audit?decision=maybe").0, 400);
    assert_eq!(gw.get("/admin/audit?from=yesterday").0, 400);

    let (_, stats) = gw.get("/admin/audit/stats?period=7d");
    assert_eq!(
        (
            stats["total"].as_u64(),
            stats["allowed"].as_u64(),
            stats["denied"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(stats["period"], "7d");
    assert_eq!(
        stats["topDeniedActions"],
        json!([{"action": "admin:drop", "count": 1}])
    );
}

#[test]
fn calls_without_a_valid_token_are_recorded_bypass_attempts() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (id, token) = agent(&gw, "a", "verified", &[]);
    let (status, _) = json(
        gw.raw(Method::GET, "/proxy/check")
            .header("X-MeshGuard-Action", "read:x")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
    gw.delete(&format!("/admin/agents/{id}"));
    assert_eq!(gw.check(&token, "read:secrets").0, 401);
    let all = entries(&gw, "");
    assert_eq!(all.len(), 2);
    for e in &all {
        assert_eq!(
            (e["event"].as_str(), e["decision"].as_str()),
            (Some("bypass_attempt"), Some("deny")),
            "{e}"
        );
    }
    assert_eq!(all[0]["agentId"], id.as_str(), "the revoked agent is named");
    assert_eq!(all[0]["reason"], "token of a revoked agent");
}

#[test]
fn audit_mode_allows_but_records_the_real_decision() {
    let dir = tempdir();
    let gw = Gateway::start_with(dir.path(), Options::with(vec![("MODE", "audit".into())]));
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let resp = gw
        .raw(Method::GET, "/proxy/check")
        .bearer_auth(&token)
        .header("X-MeshGuard-Action", "admin:drop")
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-meshguard-decision"], "deny");
    let (status, body) = json(resp);
    assert_eq!(
        (
            status,
            body["wouldDeny"].as_bool(),
            body["decision"].as_str()
        ),
        (200, Some(true), Some("allow"))
    );
    let e = &entries(&gw, "")[0];
    assert_eq!(
        (
            e["decision"].as_str(),
            e["outcome"].as_str(),
            e["mode"].as_str()
        ),
        (Some("deny"), Some("allow"), Some("audit"))
    );
    assert_eq!(e["wouldDeny"], true);
}

#[test]
fn bypass_mode_allows_everything_and_still_records_it() {
    let dir = tempdir();
    let gw = Gateway::start_with(dir.path(), Options::with(vec![("MODE", "bypass".into())]));
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let (status, body) = gw.check(&token, "admin:anything");
    assert_eq!((status, body["mode"].as_str()), (200, Some("bypass")));
    let e = &entries(&gw, "")[0];
    assert_eq!(
        (e["decision"].as_str(), e["mode"].as_str()),
        (Some("allow"), Some("bypass"))
    );
}

#[test]
fn acknowledged_decisions_survive_kill_9_and_the_log_still_verifies() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let mut traces = Vec::new();
    for i in 0..40 {
        let trace = format!("durable-{i}");
        let resp = gw
            .raw(Method::GET, "/proxy/check")
            .bearer_auth(&token)
            .header("X-MeshGuard-Action", "read:x")
            .header("X-MeshGuard-Trace-ID", &trace)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        traces.push(trace);
    }
    gw.kill9();
    let gw = Gateway::start(dir.path());
    let all = entries(&gw, "?limit=1000");
    assert_eq!(all.len(), 40);
    for trace in &traces {
        assert!(
            all.iter().any(|e| e["traceId"] == trace.as_str()),
            "{trace} lost"
        );
    }
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
    // The log goes on from where it was.
    assert_eq!(gw.check(&token, "read:y").0, 200);
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(
        (report["valid"].as_bool(), report["entries"].as_u64()),
        (Some(true), Some(43)),
        "40 decisions, one more, and a configuration entry at each of the two starts: {report}"
    );
}

/// The log on a disk that fails for real: an ext4 on a loop device whose image cannot grow any
/// more, so `fsync` returns EIO once a write needs a new block (and ext4 turns read-only, as
/// its default `errors=remount-ro` says). The refused decision is never listed, and after the
/// machine restarts the log holds every acknowledged decision and not the refused one.
#[test]
fn a_decision_whose_entry_cannot_be_made_durable_fails_closed_and_never_reappears() {
    refused_entries_never_reappear_on("remount-ro", Full::Device, "enforce");
}

/// How the disk under the log gives out.
#[derive(Clone, Copy, Debug)]
enum Full {
    /// The device under the filesystem: a write reaching it fails, and the sync reports EIO.
    Device,
    /// The filesystem itself: a write finds no free block (ENOSPC), as a full audit volume.
    Filesystem,
}

/// The audit volume fills up under a running gateway, in every mode: the decision whose entry
/// cannot be written is refused (enforce fails closed; audit and bypass would fail open, but
/// no entry can record that answer, so the call is refused there too), every later one too,
/// and the gateway says it is unhealthy, so its liveness probe restarts it. Every decision
/// answered before is in the log with the outcome its caller got, and the refused one never
/// is; restarted once there is space again, the gateway records again.
#[test]
fn a_full_audit_volume_fails_closed_then_a_restart_with_space_records_again() {
    for mode in ["enforce", "audit", "bypass"] {
        refused_entries_never_reappear_on("remount-ro", Full::Filesystem, mode);
    }
}

/// (action, outcome) of the decisions a caller saw answered, in order: the outcome is what
/// the caller got (`allow` for 200, `deny` for a policy's 403).
type Answers = Vec<(String, String)>;

fn refused_entries_never_reappear_on(errors: &str, full: Full, mode: &str) {
    let dir = tempdir();
    let mut disk = match full {
        Full::Device => LoopDisk::new(dir.path(), errors),
        Full::Filesystem => LoopDisk::with_image(dir.path(), errors, 16),
    };
    let log_dir = disk.mount.join("audit-log");
    let opts = || {
        Options::with(vec![
            ("AUDIT_LOG_DIR", log_dir.display().to_string()),
            ("MODE", mode.to_owned()),
        ])
    };
    let gw = Gateway::start_with(dir.path(), opts());
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let mut answered = decide_answering(&gw, &token, "read:first");
    match full {
        Full::Device => disk.fill(),
        Full::Filesystem => disk.fill_filesystem(),
    }
    let (action, body) = decide_until_refused(&gw, &token, &mut answered);
    the_refusal_says_why(&body, full, mode);
    match full {
        Full::Device => disk.free(),
        Full::Filesystem => disk.free_filesystem(),
    }
    the_log_stopped_until_restart(&gw, &token);
    // Readers show exactly the answered decisions, each with the outcome its caller got:
    // never the refused one, which would read as a call the caller was in fact denied.
    assert_eq!(logged(&gw), answered, "{mode}: {action} was refused");
    let export = gw.get_text("/admin/audit/export");
    assert_eq!(
        export
            .lines()
            .filter(|l| !l.contains("\"event\":\"configuration\""))
            .count(),
        answered.len(),
        "{export}"
    );
    // The machine restarts: what is on the disk is every answered decision and nothing of
    // the refused one (cut off the staging bundle when the write or sync failed).
    gw.kill9();
    disk.remount();
    let gw = Gateway::start_with(dir.path(), opts());
    assert_eq!(
        logged(&gw),
        answered,
        "{mode}: {action} was refused and stays out"
    );
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(gw.check(&token, "read:after-restart").0, 200);
}

/// One decision that must be answered as a decision (200, or a policy's 403); what the caller
/// got, as the first of the answers.
fn decide_answering(gw: &Gateway, token: &str, action: &str) -> Answers {
    let (status, body) = gw.check(token, action);
    assert_eq!(status, 200, "{body}");
    vec![(action.to_owned(), "allow".to_owned())]
}

/// Decisions, allowed (`read:N`) and denied by policy (`admin:N`) in turn, until one is
/// refused because its entry could not be written: each answered one is added to `answered`;
/// the refused action and its answer.
fn decide_until_refused(gw: &Gateway, token: &str, answered: &mut Answers) -> (String, Value) {
    for i in 0..400 {
        let action = format!("{}:{i}", if i % 2 == 0 { "read" } else { "admin" });
        let (status, body) = gw.check(token, &action);
        let reason = body["reason"].as_str().unwrap_or_default();
        if reason.contains("audit log") {
            assert_eq!(status, 403, "{body}");
            return (action, body);
        }
        let outcome = match status {
            200 => "allow",
            403 => "deny",
            _ => panic!("{action}: {status} {body}"),
        };
        answered.push((action, outcome.to_owned()));
    }
    panic!("a write to the full disk fails within 400 decisions")
}

/// The refusal names the disk's error and what the mode's breaker would have done.
fn the_refusal_says_why(body: &Value, full: Full, mode: &str) {
    let reason = body["reason"].as_str().unwrap_or_default();
    let why = match full {
        Full::Device => "could not be made durable",
        Full::Filesystem => "No space left on device",
    };
    let breaker = match mode {
        "enforce" => "failing closed (enforce mode)".to_owned(),
        _ => {
            format!("failing open ({mode} mode); the audit log could not record this answer either")
        }
    };
    assert!(
        reason.contains(why) && reason.contains(&breaker),
        "{mode}: {body}"
    );
}

/// Later decisions are refused too, saying the log stopped, and `/health` answers 503 saying
/// why, so the liveness probe restarts the gateway (the only way it records again); the
/// gateway itself keeps running.
fn the_log_stopped_until_restart(gw: &Gateway, token: &str) {
    let (status, body) = gw.check(token, "read:later");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("failed a write or a sync"),
        "{body}"
    );
    let (status, health) = gw.get("/health");
    assert_eq!(status, 503, "{health}");
    assert!(
        health["checks"]["auditLog"]
            .as_str()
            .is_some_and(|s| s.starts_with("stopped")),
        "{health}"
    );
}

/// (action, outcome) of the log's entries, oldest first, as [`Answers`].
fn logged(gw: &Gateway) -> Answers {
    entries(gw, "?limit=1000")
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_export_streamed_in_pages_is_every_line_once_in_order() {
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("RATE_LIMIT_RPM", "0".into())]),
    );
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    // 2,600 decisions: the export sends pages of 1,000, so the cuts fall inside and at the
    // edges of pages.
    for chunk in 0..3 {
        let n = if chunk == 2 { 600 } else { 1000 };
        let actions: Vec<Value> = (0..n)
            .map(|i| json!({"action": format!("read:{chunk}/{i}")}))
            .collect();
        let (status, out) = gw.batch(&token, &json!({"actions": actions}));
        assert_eq!(status, 200, "{out}");
    }
    let seqs = |query: &str| -> Vec<u64> {
        let text = gw.get_text(&format!("/admin/audit/export{query}"));
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let all = seqs("?limit=1000000");
    let total = all.len() as u64;
    assert!(total >= 2600, "{total} lines");
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    assert_eq!(
        seqs("").len() as u64,
        total,
        "the default limit (100,000) covers them"
    );
    let table: [(u64, usize, std::ops::RangeInclusive<u64>); 5] = [
        (0, 1000, 1..=1000),
        (0, 1001, 1..=1001),
        (999, 2, 1000..=1001),
        (1500, 1000, 1501..=2500),
        (total - 3, 1000, total - 2..=total),
    ];
    for (after, limit, want) in table {
        assert_eq!(
            seqs(&format!("?after={after}&limit={limit}")),
            want.collect::<Vec<_>>(),
            "after={after} limit={limit}"
        );
    }
    assert!(seqs(&format!("?after={total}")).is_empty());
}

/// `n` allowed decisions.
fn decide(gw: &Gateway, token: &str, n: usize) {
    for i in 0..n {
        assert_eq!(gw.check(token, &format!("read:{i}")).0, 200);
    }
}

/// Checkpoints now; the verify report afterwards.
fn checkpoint_and_verify(gw: &Gateway) -> Value {
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200, "{cp}");
    gw.get("/admin/audit/verify").1
}

/// `(valid, entries, checkpoints)` of a verify report.
fn summary(report: &Value) -> (Option<bool>, Option<u64>, Option<u64>) {
    (
        report["valid"].as_bool(),
        report["entries"].as_u64(),
        report["checkpoints"].as_u64(),
    )
}

#[test]
fn a_restart_resumes_from_the_last_checkpoint_and_later_checkpoints_still_verify() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    // Sizes that leave frontiers of several subtrees: 7 = 4 + 2 + 1, then 12 = 8 + 4.
    decide(&gw, &token, 7);
    assert_eq!(checkpoint_and_verify(&gw)["valid"], true);
    decide(&gw, &token, 5);
    gw.kill9();

    let gw = Gateway::start(dir.path());
    decide(&gw, &token, 3);
    let report = checkpoint_and_verify(&gw);
    assert_eq!(
        summary(&report),
        (Some(true), Some(17), Some(2)),
        "{report}"
    );
    // And once more across a restart right after a checkpoint.
    gw.kill9();
    let gw = Gateway::start(dir.path());
    decide(&gw, &token, 1);
    let report = checkpoint_and_verify(&gw);
    assert_eq!(
        summary(&report),
        (Some(true), Some(19), Some(3)),
        "{report}"
    );
}

#[test]
fn a_saved_frontier_that_does_not_match_its_signed_root_is_not_trusted() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    decide(&gw, &token, 6);
    assert_eq!(checkpoint_and_verify(&gw)["valid"], true);
    gw.kill9();
    // Someone rewrites the saved frontier (7 = 4 + 2 + 1, the start's configuration entry and
    // six decisions: three hashes) while the gateway is down.
    db(dir.path())
        .execute(
            "UPDATE audit_checkpoints SET frontier = zeroblob(96) WHERE size = 7",
            [],
        )
        .unwrap();
    let gw = Gateway::start(dir.path());
    decide(&gw, &token, 2);
    let report = checkpoint_and_verify(&gw);
    assert_eq!(
        summary(&report),
        (Some(true), Some(10), Some(2)),
        "the log was rebuilt from its rows, so the new checkpoint signs the true root: {report}"
    );
}

fn db(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("data/meshguard.db")).unwrap()
}

#[test]
fn a_tampered_row_is_found_and_named() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    for action in ["read:a", "admin:b", "read:c", "read:d"] {
        gw.check(&token, action);
    }
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200);
    let note = cp["checkpoint"].as_str().unwrap();
    let lines: Vec<&str> = note.lines().collect();
    assert_eq!(lines[0], cp["origin"].as_str().unwrap());
    assert_eq!(
        lines[1], "5",
        "the start's configuration entry and four decisions"
    );
    assert_eq!(lines[3], "");
    assert!(
        lines[4].starts_with(&format!("\u{2014} {} ", cp["origin"].as_str().unwrap())),
        "{note}"
    );
    let (_, ok) = gw.get("/admin/audit/verify");
    assert_eq!(
        (ok["valid"].as_bool(), ok["checkpoints"].as_u64()),
        (Some(true), Some(1)),
        "{ok}"
    );

    altered_and_removed_index_rows_are_named(&gw, dir.path());
    gw.kill9();
    an_altered_log_fails_against_the_index_and_the_checkpoint(dir.path());
}

/// Someone with write access to the database alters entry 3's index row, one column at a time
/// (every column the table has, read from SQLite, not listed here): each is named, with the
/// column, as altered. Put back, and row 4 removed from the index: named, as missing.
fn altered_and_removed_index_rows_are_named(gw: &Gateway, dir: &std::path::Path) {
    let conn = db(dir);
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('audit_index') WHERE name != 'seq'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(columns.len() >= 10, "{columns:?}");
    let id: String = conn
        .query_row("SELECT id FROM audit_index WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch("CREATE TEMP TABLE kept AS SELECT * FROM audit_index WHERE seq = 3")
        .unwrap();
    for column in &columns {
        conn.execute(
            &format!(
                "UPDATE audit_index SET {column} = CASE WHEN typeof({column}) = 'blob' THEN zeroblob(32)
                 WHEN {column} IS NULL THEN 'forged' ELSE {column} || 'x' END WHERE seq = 3"
            ),
            [],
        )
        .unwrap();
        let (_, report) = gw.get("/admin/audit/verify");
        assert_eq!(report["valid"], false, "{column}: {report}");
        let expect_id = if column == "id" {
            format!("{id}x")
        } else {
            id.clone()
        };
        assert_eq!(
            (
                report["firstBad"]["seq"].as_u64(),
                report["firstBad"]["id"].as_str()
            ),
            (Some(3), Some(expect_id.as_str())),
            "{column}: {report}"
        );
        let problem = report["firstBad"]["problem"].as_str().unwrap();
        assert!(
            problem.contains("altered") && problem.contains(&format!(" {column}")),
            "{column}: {report}"
        );
        conn.execute(
            &format!("UPDATE audit_index SET {column} = (SELECT {column} FROM kept) WHERE seq = 3"),
            [],
        )
        .unwrap();
    }
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "every column put back: {report}");

    // The time table narrowed so that the first block's entries fall outside it: every
    // time-bounded list would miss them.
    conn.execute(
        "UPDATE audit_index_times SET max_ts = '0' WHERE block = 0",
        [],
    )
    .unwrap();
    let (_, report) = gw.get("/admin/audit/verify");
    invalid_naming(&report, "time bounds");
    conn.execute(
        "UPDATE audit_index_times SET max_ts = (SELECT max(timestamp) FROM audit_index WHERE seq <= 256) WHERE block = 0",
        [],
    )
    .unwrap();
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "the bounds put back: {report}");

    conn.execute("DELETE FROM audit_index WHERE seq = 4", [])
        .unwrap();
    let (_, report) = gw.get("/admin/audit/verify");
    invalid_naming(&report, "missing from the index");
    assert_eq!(report["firstBad"]["seq"].as_u64(), Some(4), "{report}");
    drop(conn);
}

/// The log itself altered (the staging bundle rewritten with the deny turned into an allow,
/// each entry's length prefix kept right): named against the index, and the signed root no
/// longer matches. After a restart the index is rebuilt from the log, so the index no longer
/// disagrees, but the checkpoint still does.
fn an_altered_log_fails_against_the_index_and_the_checkpoint(dir: &std::path::Path) {
    let staging = dir.join("data/audit-log/staging/0");
    let bytes = std::fs::read(&staging).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
        let entry = String::from_utf8(bytes[at + 2..at + 2 + len].to_vec()).unwrap();
        let entry = entry.replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
        out.extend_from_slice(&(entry.len() as u16).to_be_bytes());
        out.extend_from_slice(entry.as_bytes());
        at += 2 + len;
    }
    assert_ne!(out, bytes);
    std::fs::write(&staging, out).unwrap();
    let gw = Gateway::start(dir);
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["firstBad"]["seq"].as_u64(), Some(3), "{report}");
    let conn = db(dir);
    conn.execute("DELETE FROM audit_index", []).unwrap();
    drop(conn);
    gw.kill9();
    let gw = Gateway::start(dir);
    let (_, report) = gw.get("/admin/audit/verify");
    invalid_naming(&report, "no longer hash to the signed checkpoint root");
}

/// A verify report that finds the log invalid and names `problem` for its first bad entry.
fn invalid_naming(report: &Value, problem: &str) {
    assert_eq!(report["valid"], false, "{report}");
    let named = report["firstBad"]["problem"].as_str().unwrap_or_default();
    assert!(named.contains(problem), "expected {problem:?}: {report}");
}

#[test]
fn inclusion_proofs_come_in_the_tlog_proof_format() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (_, token) = agent(&gw, "a", "verified", &[]);
    for _ in 0..5 {
        gw.check(&token, "read:x");
    }
    let id = entries(&gw, "")[2]["id"].as_str().unwrap().to_owned();
    let resp = gw
        .admin(Method::GET, &format!("/admin/audit/proof?id={id}"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 409, "no checkpoint covers it yet");
    gw.post("/admin/audit/checkpoint", json!({}));
    let text = gw.get_text(&format!("/admin/audit/proof?id={id}"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "c2sp.org/tlog-proof@v1");
    // Leaf 0 is the start's configuration entry; the five decisions are leaves 1 to 5.
    assert_eq!(lines[1], "index 3");
    assert_eq!(
        lines.len(),
        2 + 3 + 1 + 4 + 1,
        "three path hashes for 6 leaves, a blank line, the checkpoint: {text}"
    );
    let (status, c) = gw.get("/admin/audit/consistency?from=3");
    assert_eq!((status, c["to"].as_u64()), (200, Some(6)), "{c}");
    assert!(!c["proof"].as_array().unwrap().is_empty());

    // At a chosen signed size (a cosigned one, say), not only the latest.
    gw.check(&token, "read:x");
    gw.post("/admin/audit/checkpoint", json!({}));
    let latest = gw.get_text(&format!("/admin/audit/proof?id={id}"));
    assert!(
        latest.contains("\n7\n"),
        "the latest checkpoint has 7 entries: {latest}"
    );
    let at6 = gw.get_text(&format!("/admin/audit/proof?id={id}&size=6"));
    assert_eq!(at6, text, "the proof at size 6 is the one given before");
    let status = |q: &str| {
        gw.admin(Method::GET, &format!("/admin/audit/proof?id={id}&{q}"))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(
        status("size=5"),
        404,
        "no checkpoint of 5 entries was signed"
    );
    let last = entries(&gw, "")[0]["id"].as_str().unwrap().to_owned();
    let resp = gw
        .admin(Method::GET, &format!("/admin/audit/proof?id={last}&size=6"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 409, "entry 7 is not in the checkpoint of 6");
}

#[test]
fn proofs_over_hundreds_of_entries_read_the_hash_tiles_and_never_hand_out_bad_ones() {
    let dir = tempdir();
    // Hundreds of decisions in a few seconds: over the default client limit, which counts
    // each action of a batch.
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("RATE_LIMIT_RPM", "0".into())]),
    );
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let actions: Vec<Value> = (0..100)
        .map(|i| json!({"action": format!("read:{i}")}))
        .collect();
    for _ in 0..7 {
        let (status, out) = gw.batch(&token, &json!({"actions": actions}));
        assert_eq!(status, 200, "{out}");
    }
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200, "{cp}");
    // 701 entries (the start's configuration entry and 700 decisions): two full entry bundles and their hash tiles, in the C2SP tiles layout; the
    // checkpoint's partial tiles beside them.
    let log = dir.path().join("data/audit-log");
    for (path, len) in [
        ("tile/0/000", 8192),
        ("tile/0/001", 8192),
        ("tile/0/002.p/189", 189 * 32),
        ("tile/1/000.p/2", 64),
    ] {
        let meta = std::fs::metadata(log.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.len(), len, "{path}");
    }
    assert!(log.join("tile/entries/001").is_file());
    assert!(log.join("tile/entries/002.p/189").is_file());
    assert!(log.join("checkpoint").is_file());

    let first = entries(&gw, "?limit=1000").last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let proof = |id: &str| {
        gw.admin(Method::GET, &format!("/admin/audit/proof?id={id}"))
            .send()
            .unwrap()
    };
    let ok = proof(&first);
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text()
            .unwrap()
            .starts_with("c2sp.org/tlog-proof@v1\nindex 1\n"),
        "the first decision follows the start's configuration entry"
    );
    for from in [256, 300, 700] {
        let (status, c) = gw.get(&format!("/admin/audit/consistency?from={from}"));
        assert_eq!((status, c["to"].as_u64()), (200, Some(701)), "{c}");
    }

    // A hash tile altered on disk: the proof no longer checks against the signed root, and the
    // gateway refuses to hand it out.
    let tile = log.join("tile/0/001");
    let saved = std::fs::read(&tile).unwrap();
    std::fs::write(&tile, vec![0u8; 8192]).unwrap();
    let (status, refused) = json(proof(&first));
    assert_eq!(
        (status, refused["error"].as_str()),
        (500, Some("audit_inconsistent")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/admin/audit/verify"),
        "{refused}"
    );
    // Without it, the hashes are computed from the entries again.
    std::fs::remove_file(&tile).unwrap();
    assert_eq!(proof(&first).status(), 200);
    std::fs::write(&tile, saved).unwrap();
    assert_eq!(proof(&first).status(), 200);
}

/// The data directory of `fixtures/log-v1` (a log kept as SQLite rows) under `into`; returns it.
fn log_v1(into: &std::path::Path) -> std::path::PathBuf {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/log-v1");
    let data = into.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for key in ["audit-log.key", "policy-bundle.key", "secrets.key"] {
        std::fs::copy(fixture.join(key), data.join(key)).unwrap();
        let mut perm = std::fs::metadata(data.join(key)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(data.join(key), perm).unwrap();
    }
    let mut db = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(
            std::fs::File::open(fixture.join("meshguard.db.gz")).unwrap(),
        ),
        &mut db,
    )
    .unwrap();
    std::fs::write(data.join("meshguard.db"), db).unwrap();
    data
}

/// A gateway started on a copy of log-v1 under `dir`: the rows moved into tiles, the log
/// verifies with its 600 entries, the start's own entry and its three checkpoints.
fn moved_and_verified(dir: &std::path::Path) -> Gateway {
    let gw = Gateway::start_with(dir, fixture_origin());
    let report = gw.get("/admin/audit/verify").1;
    assert_eq!(
        summary(&report),
        (Some(true), Some(601), Some(3)),
        "{report}"
    );
    gw
}

/// A move into tiles that stopped part way (a directory holding the first bundle of the 600
/// rows, as a move killed after its first sync would leave it) is refused at start, naming
/// what to do, and the rows are all still there; done as it says, the move completes.
#[test]
fn a_move_into_tiles_that_stopped_part_way_is_refused_and_loses_nothing() {
    let moved = tempdir();
    let dir = tempdir();
    log_v1(moved.path());
    let gw = Gateway::start_with(moved.path(), fixture_origin());
    gw.kill9();
    let data = log_v1(dir.path());
    let partial = data.join("audit-log/tile/entries");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::copy(
        moved.path().join("data/audit-log/tile/entries/000"),
        partial.join("000"),
    )
    .unwrap();
    let said = crate::harness::refused_start(dir.path(), &fixture_origin());
    assert!(said.contains("stopped part way"), "{said}");
    let rows: i64 = db(dir.path())
        .query_row("SELECT count(*) FROM audit_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 600, "every row is still in the database");
    std::fs::remove_dir_all(data.join("audit-log")).unwrap();
    moved_and_verified(dir.path());
}

/// A log written by the release before the tiles layout (`fixtures/log-v1`: 600 entries as
/// SQLite rows, checkpoints at 100, 300 and 600) moves into the log directory at start, byte
/// for byte: the three signed checkpoints verify against the tiles, and the log goes on.
#[test]
fn a_log_kept_as_rows_moves_into_tiles_with_the_same_roots() {
    let dir = tempdir();
    let data = log_v1(dir.path());
    let gw = moved_and_verified(dir.path());
    let log = data.join("audit-log");
    for full in [
        "tile/entries/000",
        "tile/entries/001",
        "tile/0/000",
        "tile/0/001",
    ] {
        assert!(log.join(full).is_file(), "{full}");
    }
    // The moved log's latest checkpoint was published with its partial tiles; the start then
    // added its configuration entry, and the next checkpoint covers it and is published.
    assert!(log.join("tile/entries/002.p/88").is_file());
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200, "{cp}");
    let published = std::fs::read_to_string(log.join("checkpoint")).unwrap();
    assert!(
        published.starts_with("fixture.meshguard.local/audit\n601\n"),
        "{published}"
    );
    assert!(log.join("tile/entries/002.p/89").is_file());
    let (_, latest) = gw.get("/admin/audit/checkpoint");
    assert_eq!(latest["checkpoint"].as_str(), Some(published.as_str()));
    // Reading it signs nothing: the log's checkpoints are as many after reads as before.
    let count = || gw.get("/admin/audit/verify").1["checkpoints"].as_u64();
    let before = count();
    for _ in 0..3 {
        gw.get("/admin/audit/checkpoint");
    }
    assert_eq!(count(), before, "GET /admin/audit/checkpoint is a read");
    let served = gw
        .raw(Method::GET, "/audit/log/checkpoint")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        served, published,
        "served as it is on disk, without credentials"
    );
    // Every old checkpoint's root is the tiles' root at its size: the consistency proofs from
    // each to the latest check out against the signed notes (verify above replayed them too).
    for from in [100, 300, 600] {
        let (status, c) = gw.get(&format!("/admin/audit/consistency?from={from}"));
        assert_eq!((status, c["to"].as_u64()), (200, Some(601)), "{c}");
    }
    // The log goes on from there, and survives a restart on the new layout.
    let (_, token) = agent(&gw, "after", "verified", &[]);
    decide(&gw, &token, 3); // under the fixture's own "reads" policy
    gw.kill9();
    let gw = Gateway::start_with(dir.path(), fixture_origin());
    let report = checkpoint_and_verify(&gw);
    assert_eq!(
        summary(&report),
        (Some(true), Some(605), Some(5)),
        "600, a configuration entry at each start and three decisions: {report}"
    );
    assert_eq!(entries(&gw, "?limit=1000").len(), 603);
}

/// The log read by a client written from the spec, not from our code: Go's sumdb tlog package
/// verifies the signed checkpoint, recomputes the tree hash from the served hash tiles, proves
/// every entry of the bundles in it, and proves the log consistent with an older checkpoint
/// (and reads that checkpoint's root from the same tiles, at its own size).
/// The data directory a gateway of a release before schema 14 left (its audit index held every
/// entry's body): `fixtures/index-v13`, made by its `make-fixture.sh`, with what that release
/// answered to six lists.
fn index_v13(into: &std::path::Path) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/index-v13/index-v13.tar.gz");
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(fixture).unwrap());
    tar::Archive::new(gz).unpack(into).unwrap();
    for key in ["audit-log.key", "policy-bundle.key", "secrets.key"] {
        let path = into.join("data").join(key);
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
        std::fs::set_permissions(&path, perm).unwrap();
    }
}

fn fixture_origin() -> Options<'static> {
    Options::with(vec![(
        "AUDIT_ORIGIN",
        "fixture.meshguard.local/audit".to_owned(),
    )])
}

/// Today's gateway on that directory drops the old index, fills the new one from the log
/// behind it, and lists what the earlier release listed, entry for entry, for every filter (all,
/// a decision, an agent by name, a trace id, an action, a time range); the log verifies with
/// both checkpoints.
#[test]
fn an_index_of_an_earlier_release_is_refilled_from_the_log_and_lists_the_same() {
    let dir = tempdir();
    index_v13(dir.path());
    let read = |name: &str| -> Value {
        let path = dir.path().join(format!("expected/{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let size = read("verify")["entries"].as_u64().unwrap();
    assert!(size > 600, "the fixture holds its 600 decisions: {size}");
    let gw = Gateway::start_with(dir.path(), fixture_origin());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while gw.get("/admin/audit?limit=1000").1["entries"]
        .as_array()
        .unwrap()
        .len() as u64
        <= size
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the index was not filled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let old_table: i64 = db(dir.path())
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_entries'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_table, 0, "the old index is dropped");
    let first = read("all")["entries"].as_array().unwrap().last().unwrap()["timestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, query) in [
        ("all", "?limit=1000".to_owned()),
        ("denied", "?decision=deny&limit=1000".to_owned()),
        ("beta", "?agent=beta&limit=50".to_owned()),
        ("trace-77", "?traceId=fixture-77".to_owned()),
        ("action", "?action=read:x5&limit=10".to_owned()),
        (
            "from-first",
            format!("?from={first}&to=2100-01-01&limit=1000"),
        ),
    ] {
        let before = read(name)["entries"].as_array().unwrap().clone();
        assert!(!before.is_empty(), "{name}");
        let now: Vec<Value> = gw.get(&format!("/admin/audit{query}")).1["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() <= size)
            .cloned()
            .collect();
        assert_eq!(now, before, "{name}: {query}");
    }
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["checkpoints"].as_u64(), Some(2), "{report}");
}

/// The old index's count still guards the log: the same directory with its log removed is
/// refused at start (before, an empty new index would have taken the empty log as a new one);
/// and once the old index is dropped, its recorded count does: the new index lost and the log
/// removed, the start is refused too.
#[test]
fn a_log_removed_under_an_index_of_an_earlier_release_is_refused() {
    let dir = tempdir();
    index_v13(dir.path());
    let log = dir.path().join("data/audit-log");
    let kept = dir.path().join("audit-log-kept");
    meshguard_testkit::copy_dir(&log, &kept);
    std::fs::remove_dir_all(&log).unwrap();
    let said = crate::harness::refused_start(dir.path(), &fixture_origin());
    assert!(
        said.contains("the directory was removed, replaced or cut short"),
        "{said}"
    );

    // The refused start made an empty directory (and its lock) there.
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::rename(&kept, &log).unwrap();
    let gw = Gateway::start_with(dir.path(), fixture_origin());
    gw.kill9();
    let conn = db(dir.path());
    conn.execute("DELETE FROM audit_index", []).unwrap();
    drop(conn);
    std::fs::remove_dir_all(&log).unwrap();
    let said = crate::harness::refused_start(dir.path(), &fixture_origin());
    assert!(
        said.contains("held 601"),
        "the dropped index's count guards the start: {said}"
    );
}

#[test]
fn gos_tlog_package_reads_the_tiles_and_checks_every_entry_and_an_older_checkpoint() {
    let dir = tempdir();
    // Hundreds of decisions in a few seconds: over the default client limit, which counts
    // each action of a batch.
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("RATE_LIMIT_RPM", "0".into())]),
    );
    policy(&gw, "reads", READS);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let batch = |n: usize| {
        let actions: Vec<Value> = (0..n)
            .map(|i| json!({"action": if i % 9 == 0 { format!("admin:{i}") } else { format!("read:{i}") }}))
            .collect();
        let (status, out) = gw.batch(&token, &json!({"actions": actions}));
        assert_eq!(status, 200, "{out}");
    };
    for _ in 0..3 {
        batch(100);
    }
    let (_, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    let old = dir.path().join("checkpoint-300");
    std::fs::write(&old, cp["checkpoint"].as_str().unwrap()).unwrap();
    // To 66,000 entries would take minutes here; 700 give full tiles, partial tiles and a
    // level-1 tile, which is every shape the reader handles.
    for _ in 0..4 {
        batch(100);
    }
    let (_, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    let vkey = cp["vkey"].as_str().unwrap();
    let out = std::process::Command::new(meshguard_testkit::tlogcheck(dir.path()))
        .args([
            "-url",
            &gw.url(""),
            "-vkey",
            vkey,
            "-token",
            crate::harness::ADMIN_TOKEN,
            "-old",
        ])
        .arg(&old)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tlogcheck: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            report["size"].as_u64(),
            report["records"].as_u64(),
            report["consistentFrom"].as_u64()
        ),
        (Some(701), Some(701), Some(301)),
        "{report}"
    );

    // The same reader refuses a log whose served tile was altered.
    let tile = dir.path().join("data/audit-log/tile/0/001");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&tile, bytes).unwrap();
    let out = std::process::Command::new(dir.path().join("tlogcheck"))
        .args([
            "-url",
            &gw.url(""),
            "-vkey",
            vkey,
            "-token",
            crate::harness::ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an altered tile is noticed");
    only_the_log_is_served_and_entries_need_the_admin_token(&gw);
}

/// Entry bundles need the admin token; hash tiles and the checkpoint do not; nothing but the
/// log's tiles is served under the tile path.
fn only_the_log_is_served_and_entries_need_the_admin_token(gw: &Gateway) {
    assert_eq!(
        gw.raw(Method::GET, "/audit/log/tile/entries/000")
            .send()
            .unwrap()
            .status(),
        404
    );
    let resp = gw
        .raw(Method::GET, "/admin/audit/log/tile/entries/000")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    for bad in [
        "0/../../meshguard.db",
        "0/x000/001",
        "0/000.p/0",
        "staging/0",
    ] {
        let status = gw
            .raw(Method::GET, &format!("/audit/log/tile/{bad}"))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 404, "{bad}");
    }
}
