//! `/admin/changes`: every admin write leaves a record with approver, ticket and digests.

use serde_json::json;

use crate::harness::{Gateway, agent, tempdir};

#[test]
fn every_write_is_recorded_with_approver_ticket_and_digests() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let v1 = "name: p\nrules:\n  - effect: allow\n    actions: [a]\n";
    let v2 = "name: p\nrules:\n  - effect: deny\n    actions: [a]\n";
    let (status, created) = crate::harness::json(
        gw.admin(reqwest::Method::POST, "/admin/policies")
            .header("X-MeshGuard-Approver", "alice@example.com")
            .header("X-MeshGuard-Change-Ticket", "CHG-1042")
            .header("X-MeshGuard-Trace-ID", "trace-abc")
            .json(&json!({"name": "p", "content": v1}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    gw.put(&format!("/admin/policies/{id}"), json!({"content": v2}));
    gw.delete(&format!("/admin/policies/{id}"));
    let (aid, _) = agent(&gw, "a", "verified", &[]);
    gw.patch(
        &format!("/admin/agents/{aid}"),
        json!({"trustTier": "trusted"}),
    );
    gw.post(&format!("/admin/agents/{aid}/token"), json!({}));
    gw.delete(&format!("/admin/agents/{aid}"));

    let (status, body) = gw.get("/admin/changes");
    assert_eq!(status, 200);
    let changes = body["changes"].as_array().unwrap();
    let ops: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("policy", "create"),
            ("policy", "update"),
            ("policy", "delete"),
            ("agent", "create"),
            ("agent", "update"),
            ("agent", "token_reissue"),
            ("agent", "delete")
        ]
    );
    let seqs: Vec<i64> = changes.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));

    let create = &changes[0];
    assert_eq!(
        (create["approver"].as_str(), create["changeTicket"].as_str()),
        (Some("alice@example.com"), Some("CHG-1042"))
    );
    assert_eq!(create["traceId"], "trace-abc");
    assert!(create.get("oldDigest").is_none());
    let update = &changes[1];
    assert_eq!(update["oldDigest"], create["newDigest"]);
    assert_ne!(update["oldDigest"], update["newDigest"]);
    assert_eq!(update["fields"], json!(["content"]));
    assert_eq!(
        (
            update["before"]["content"].as_str(),
            update["after"]["content"].as_str()
        ),
        (Some(v1), Some(v2))
    );
    assert!(changes[2].get("after").is_none() && changes[2]["oldDigest"] == update["newDigest"]);
    assert_eq!(changes[4]["fields"], json!(["trustTier"]));
    assert_eq!(changes[5]["fields"], json!(["token"]));
    assert!(
        !body.to_string().contains("eyJ"),
        "no token in change records"
    );

    let (_, only) = gw.get(&format!(
        "/admin/changes?kind=agent&objectId={aid}&after={}",
        seqs[4]
    ));
    assert_eq!(only["changes"].as_array().unwrap().len(), 2);
    assert_eq!(gw.get("/admin/changes?kind=widgets").0, 400);
}

#[test]
fn a_refused_write_leaves_no_record() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    gw.post("/admin/agents", json!({"name": "x", "trustTier": "root"}));
    gw.post(
        "/admin/policies",
        json!({"name": "x", "content": "rules: 5"}),
    );
    assert_eq!(gw.get("/admin/changes").1["changes"], json!([]));
}

/// A policy change records, besides old/new digest, approver and ticket, when it took effect
/// (decisions use it from then on) and the change it replaced, whose state a rollback restores.
#[test]
fn a_policy_change_records_its_deployment_and_what_a_rollback_restores() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (_, token) = agent(&gw, "reviewer", "verified", &[]);
    let v1 = "name: p\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    let v2 = "name: p\nrules:\n  - effect: deny\n    actions: [\"read:*\"]\n";
    let write = |method: reqwest::Method, path: &str, content: &str, ticket: &str| {
        let (status, body) = crate::harness::json(
            gw.admin(method, path)
                .header("X-MeshGuard-Approver", "alice@example.com")
                .header("X-MeshGuard-Change-Ticket", ticket)
                .json(&json!({"name": "p", "content": content}))
                .send()
                .unwrap(),
        );
        assert!(status == 200 || status == 201, "{status} {body}");
        body
    };
    let created = write(reqwest::Method::POST, "/admin/policies", v1, "CHG-1");
    let id = created["id"].as_str().unwrap();
    assert_eq!(gw.check(&token, "read:repo").0, 200);
    write(
        reqwest::Method::PUT,
        &format!("/admin/policies/{id}"),
        v2,
        "CHG-2",
    );
    assert_eq!(gw.check(&token, "read:repo").0, 403, "v2 is deployed");

    let changes = |gw: &Gateway| {
        let (_, body) = gw.get(&format!("/admin/changes?kind=policy&objectId={id}"));
        body["changes"].as_array().unwrap().clone()
    };
    let list = changes(&gw);
    let (create, update) = (&list[0], &list[1]);
    for c in [create, update] {
        let deployed = c["deployedAt"].as_str().expect("deployedAt");
        assert!(
            deployed >= c["timestamp"].as_str().unwrap(),
            "deployed at or after the commit: {c}"
        );
    }
    assert!(
        create.get("rollbackRef").is_none(),
        "a create is rolled back by a delete"
    );
    assert_eq!(update["rollbackRef"], create["id"]);
    assert_eq!(update["oldDigest"], create["newDigest"]);
    assert_eq!(update["changeTicket"], "CHG-2");
    assert_eq!(update["approver"], "alice@example.com");

    // The rollback: the referenced change's state, written back, is what decisions use again.
    let (_, all) = gw.get("/admin/changes?kind=policy");
    let target = all["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == update["rollbackRef"])
        .unwrap()
        .clone();
    let restore = target["after"]["content"].as_str().unwrap();
    write(
        reqwest::Method::PUT,
        &format!("/admin/policies/{id}"),
        restore,
        "CHG-3",
    );
    assert_eq!(gw.check(&token, "read:repo").0, 200, "rolled back");
    let list = changes(&gw);
    assert_eq!(list[2]["rollbackRef"], update["id"]);
    assert_eq!(list[2]["newDigest"], create["newDigest"]);

    // An agent's change takes effect with its commit.
    let (_, agents) = gw.get("/admin/changes?kind=agent");
    let a = &agents["changes"][0];
    assert_eq!(a["deployedAt"], a["timestamp"]);
}

/// A database written before changes kept their deployment and rollback reference gains the
/// reference for every record it holds when a newer gateway opens it; the deployment time of
/// those old records is unknown and stays absent.
#[test]
fn older_change_records_gain_their_rollback_reference_on_upgrade() {
    let dir = tempdir();
    let ids: Vec<String> = {
        let gw = Gateway::start(dir.path());
        let id = crate::harness::policy(
            &gw,
            "p",
            "name: p\nrules:\n  - effect: allow\n    actions: [a]\n",
        );
        let (status, _) = gw.put(
            &format!("/admin/policies/{id}"),
            json!({"content": "name: p\nrules:\n  - effect: deny\n    actions: [a]\n"}),
        );
        assert_eq!(status, 200);
        let (_, body) = gw.get("/admin/changes?kind=policy");
        body["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Back to the schema before migration 10 (and the later ones), as an older gateway left it.
    let db = rusqlite::Connection::open(dir.path().join("data/meshguard.db")).unwrap();
    db.execute_batch(
        "DROP INDEX changes_idempotency_key;
         ALTER TABLE changes DROP COLUMN idempotency_key;
         ALTER TABLE changes DROP COLUMN deployed_at;
         ALTER TABLE changes DROP COLUMN rollback_ref;
         DROP TABLE alert_deliveries;
         DROP TABLE audit_layout;
         DROP TABLE audit_index;
         DROP TABLE audit_index_times;
         CREATE TABLE audit_entries (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
             source TEXT NOT NULL, timestamp TEXT NOT NULL, agent_id TEXT, action TEXT NOT NULL,
             decision TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
         DELETE FROM schema_migrations WHERE version >= 10;",
    )
    .unwrap();
    drop(db);

    let gw = Gateway::start(dir.path());
    let (_, body) = gw.get("/admin/changes?kind=policy");
    let list = body["changes"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].get("rollbackRef").is_none());
    assert_eq!(list[1]["rollbackRef"], ids[0].as_str());
    assert!(list.iter().all(|c| c.get("deployedAt").is_none()), "{body}");
}

/// A site's signed approver list: a policy change is taken only with an approver on it and a
/// ticket; the list in force is in the signed log with the configuration, at every start. A
/// list that is unsigned, signed by another key or names nobody keeps the gateway from
/// starting, saying why.
#[test]
fn only_an_approver_on_the_sites_signed_list_approves_a_policy_change() {
    use crate::harness::{Options, minisign};
    let dir = tempdir();
    let d = dir.path();
    minisign(&["-G", "-W", "-p", "site.pub", "-s", "site.key"], d);
    minisign(&["-G", "-W", "-p", "other.pub", "-s", "other.key"], d);
    let write_list = |approvers: serde_json::Value, key: &str| {
        let doc = json!({"format": "meshguard-change-approvers/v1", "version": 3, "approvers": approvers});
        std::fs::write(d.join("approvers.json"), doc.to_string()).unwrap();
        let _ = std::fs::remove_file(d.join("approvers.json.minisig"));
        minisign(&["-S", "-s", key, "-m", "approvers.json"], d);
    };
    let opts = || {
        Options::with(vec![
            (
                "CHANGE_APPROVERS",
                d.join("approvers.json").display().to_string(),
            ),
            (
                "CHANGE_APPROVERS_PUBKEY",
                d.join("site.pub").display().to_string(),
            ),
        ])
    };
    // Refused at start, each with its reason.
    for (approvers, key, says) in [
        (json!(["ops-lead"]), "other.key", "is not signed by the key"),
        (json!([]), "site.key", "names no approver"),
    ] {
        write_list(approvers, key);
        let out = crate::harness::refused_start(d, &opts());
        assert!(out.contains(says), "{says}: {out}");
    }

    write_list(json!(["ops-lead", "security-officer"]), "site.key");
    let gw = Gateway::start_with(d, opts());
    let policy =
        json!({"name": "p", "content": "name: p\nrules:\n  - effect: allow\n    actions: [a]\n"});
    let send = |approver: Option<&str>, ticket: Option<&str>| {
        let mut req = gw.admin(reqwest::Method::POST, "/admin/policies");
        if let Some(a) = approver {
            req = req.header("X-MeshGuard-Approver", a);
        }
        if let Some(t) = ticket {
            req = req.header("X-MeshGuard-Change-Ticket", t);
        }
        crate::harness::json(req.json(&policy).send().unwrap())
    };
    for (approver, ticket, status, error) in [
        (None, Some("CHG-1"), 428, "approval_required"),
        (Some("ops-lead"), None, 428, "approval_required"),
        (Some("mallory"), Some("CHG-1"), 403, "approver_not_listed"),
        (Some("Ops-Lead"), Some("CHG-1"), 403, "approver_not_listed"),
    ] {
        let (got, body) = send(approver, ticket);
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{approver:?} {ticket:?}: {body}"
        );
    }
    let (_, none) = gw.get("/admin/policies");
    assert_eq!(
        none["policies"].as_array().map(Vec::len),
        Some(0),
        "nothing changed"
    );
    let (status, body) = send(Some("ops-lead"), Some("CHG-7"));
    assert_eq!(status, 201, "{body}");

    let (_, page) = gw.get("/admin/audit?limit=100");
    let config = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "configuration")
        .expect("the start's configuration entry");
    let list = &config["meta"]["changeApprovers"];
    assert_eq!(
        (list["version"].as_u64(), list["approvers"].clone()),
        (Some(3), json!(["ops-lead", "security-officer"])),
        "{config}"
    );
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(d.join("approvers.json")).unwrap(),
        ))
    };
    assert_eq!(list["sha256"].as_str(), Some(digest.as_str()));

    // An older signed list (one that still named someone since removed) is refused at start.
    drop(gw);
    let older = json!({"format": "meshguard-change-approvers/v1", "version": 2, "approvers": ["ops-lead", "mallory"]});
    std::fs::write(d.join("approvers.json"), older.to_string()).unwrap();
    let _ = std::fs::remove_file(d.join("approvers.json.minisig"));
    minisign(&["-S", "-s", "site.key", "-m", "approvers.json"], d);
    let out = crate::harness::refused_start(d, &opts());
    assert!(out.contains("older than version 3"), "{out}");
}
