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
