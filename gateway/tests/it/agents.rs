//! `/admin/agents`: the contract existing MeshGuard clients rely on.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, agent, json, tempdir};

#[test]
fn create_answers_201_with_the_full_agent_and_its_token() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, body) = gw.post(
        "/admin/agents",
        json!({"name": "code-reviewer", "trust_tier": "trusted", "tags": ["ci"], "metadata": {"team": "platform"},
               "capabilities": ["review"], "description": "reviews code"}),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("agent_"));
    assert_eq!(body["trustTier"], "trusted");
    assert_eq!(body["tags"], json!(["ci"]));
    assert_eq!(body["metadata"], json!({"team": "platform"}));
    assert_eq!(body["capabilities"], json!(["review"]));
    assert_eq!(body["status"], "active");
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    assert_eq!(body["apiKey"], body["token"]);
    assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'));

    // Default tier, and the token is never shown again.
    let (_, plain) = gw.post("/admin/agents", json!({"name": "plain"}));
    assert_eq!(plain["trustTier"], "verified");
    let (status, got) = gw.get(&format!("/admin/agents/{}", body["id"].as_str().unwrap()));
    assert_eq!(status, 200);
    assert!(got.get("token").is_none() && got.get("apiKey").is_none());
    assert_eq!(got["name"], "code-reviewer");
}

#[test]
fn tiers_are_echoed_exactly_and_unknown_ones_are_refused_with_the_list() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (_, body) = gw.post(
        "/admin/agents",
        json!({"name": "legacy", "trustTier": "untrusted"}),
    );
    assert_eq!(body["trustTier"], "untrusted");
    let (status, body) = gw.post("/admin/agents", json!({"name": "x", "trustTier": "root"}));
    assert_eq!(status, 400);
    assert_eq!(body["field"], "trustTier");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unverified, verified, trusted, privileged"),
        "{body}"
    );
}

#[test]
fn list_filters_by_tier_rank_and_status() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    // Lists are in creation time (milliseconds), then id: agents made within one millisecond
    // come in id order, which is random. Each agent here is made in a millisecond of its own, so
    // the order the test asserts is the one the product promises (the test had failed once on
    // a fast run: b and c made in one millisecond came out c, b).
    let made = |name: &str, tier: &str| {
        let made = agent(&gw, name, tier, &[]);
        std::thread::sleep(std::time::Duration::from_millis(2));
        made
    };
    made("a", "trusted");
    made("b", "untrusted");
    let (c, _) = made("c", "trusted");
    gw.delete(&format!("/admin/agents/{c}"));
    let names = |path: &str| -> Vec<String> {
        let (status, body) = gw.get(path);
        assert_eq!(status, 200, "{body}");
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("/admin/agents"), ["a", "b"]);
    assert_eq!(names("/admin/agents?trustTier=trusted"), ["a"]);
    assert_eq!(names("/admin/agents?trustTier=unverified"), ["b"]);
    assert_eq!(names("/admin/agents?status=revoked"), ["c"]);
    assert_eq!(names("/admin/agents?status=all"), ["a", "b", "c"]);
    assert_eq!(gw.get("/admin/agents?trustTier=boss").0, 400);
}

#[test]
fn patch_and_put_update_in_place() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (id, _) = agent(&gw, "a", "verified", &["x"]);
    let (status, body) = gw.patch(
        &format!("/admin/agents/{id}"),
        json!({"trustTier": "privileged", "metadata": {"k": "v"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["trustTier"].as_str(), body["name"].as_str()),
        (Some("privileged"), Some("a"))
    );
    assert_eq!(body["tags"], json!(["x"]), "fields not sent are kept");
    let (status, body) = gw.put(
        &format!("/admin/agents/{id}"),
        json!({"name": "renamed", "tags": []}),
    );
    assert_eq!(status, 200);
    assert_eq!(body["name"], "renamed");
    assert_eq!(body["tags"], json!([]));
    let (_, got) = gw.get(&format!("/admin/agents/{id}"));
    assert_eq!(
        (got["name"].as_str(), got["metadata"]["k"].as_str()),
        (Some("renamed"), Some("v"))
    );
    assert_eq!(
        gw.patch(
            &format!("/admin/agents/{id}"),
            json!({"trustTier": "godlike"})
        )
        .0,
        400
    );
    assert_eq!(
        gw.patch("/admin/agents/agent_missing", json!({"name": "n"}))
            .0,
        404
    );
}

#[test]
fn revoke_is_immediate_and_the_token_stops_working() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    crate::harness::policy(
        &gw,
        "all",
        "name: all\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
    );
    let (id, token) = agent(&gw, "a", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);

    let (status, body) = gw.delete(&format!("/admin/agents/{id}"));
    assert_eq!(
        (status, body["status"].as_str(), body["id"].as_str()),
        (200, Some("revoked"), Some(id.as_str()))
    );
    let (status, body) = gw.check(&token, "read:x");
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Invalid or expired token"))
    );
    assert_eq!(gw.get(&format!("/admin/agents/{id}")).0, 404);
    assert_eq!(
        gw.delete(&format!("/admin/agents/{id}")).0,
        404,
        "revoking twice"
    );
    assert_eq!(
        gw.post(&format!("/admin/agents/{id}/token"), json!({})).0,
        404,
        "no token for a revoked agent"
    );
}

#[test]
fn token_reissue_replaces_the_old_token() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    crate::harness::policy(
        &gw,
        "all",
        "name: all\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
    );
    let (id, old) = agent(&gw, "a", "verified", &[]);
    let (status, body) = gw.post(&format!("/admin/agents/{id}/token"), json!({}));
    assert_eq!(status, 200, "{body}");
    let new = body["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(gw.check(new, "read:x").0, 200);
    assert_eq!(gw.check(&old, "read:x").0, 401);
}

#[test]
fn token_ttl_zero_never_expires_and_bad_ttls_are_named() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, body) = gw.post("/admin/agents", json!({"name": "forever", "tokenTtl": 0}));
    assert_eq!(status, 201);
    assert!(body.get("expiresAt").is_none(), "{body}");
    let (status, body) = gw.post("/admin/agents", json!({"name": "week", "tokenTtl": "7d"}));
    assert_eq!(status, 201);
    assert!(body["expiresAt"].is_string());
    let (status, body) = gw.post("/admin/agents", json!({"name": "x", "tokenTtl": "soon"}));
    assert_eq!((status, body["field"].as_str()), (400, Some("tokenTtl")));
}

#[test]
fn bad_bodies_name_the_field_and_nothing_is_created() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, body) = gw.post("/admin/agents", json!({"name": "a", "tags": ["ok", 7]}));
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("tags[1]")),
        "{body}"
    );
    let (status, body) = gw.post("/admin/agents", json!({"tags": []}));
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("name"), "{body}");
    let (status, body) = gw.post("/admin/agents", json!({"name": "  "}));
    assert_eq!((status, body["field"].as_str()), (400, Some("name")));
    let (status, body) = json(
        gw.admin(Method::POST, "/admin/agents")
            .body("{\"name\": ")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{body}"
    );
    let (status, body) = json(gw.admin(Method::POST, "/admin/agents").send().unwrap());
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("request body is empty; expected a JSON object"))
    );
    assert_eq!(gw.get("/admin/agents").1["agents"], json!([]));
}

#[test]
fn bodies_over_the_limit_get_413() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let (status, body) = json(
        gw.admin(Method::POST, "/admin/agents")
            .body(big)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 413);
    assert!(
        body["message"].as_str().unwrap().contains("MAX_BODY_BYTES"),
        "{body}"
    );
    assert_eq!(gw.get("/admin/agents").1["agents"], json!([]));
}

/// A create sent again with its `Idempotency-Key` answers the object the first one made (the
/// provider sends one key for all attempts of a create); a key is not reused for another
/// kind of object.
#[test]
fn a_create_sent_again_with_its_idempotency_key_makes_nothing_new() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let create = |path: &str, key: &str, body: serde_json::Value| {
        json(
            gw.admin(Method::POST, path)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .unwrap(),
        )
    };
    let (s1, first) = create(
        "/admin/agents",
        "key-a",
        serde_json::json!({"name": "twice"}),
    );
    let (s2, second) = create(
        "/admin/agents",
        "key-a",
        serde_json::json!({"name": "twice"}),
    );
    assert_eq!((s1, s2), (201, 201), "{first} {second}");
    assert!(
        first["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("agent_")),
        "{first}"
    );
    assert_eq!(first["id"], second["id"]);
    let (_, list) = gw.get("/admin/agents");
    assert_eq!(list["agents"].as_array().unwrap().len(), 1, "{list}");
    // Another key is another agent; the same key for a channel is refused, naming the agent.
    let (s3, third) = create(
        "/admin/agents",
        "key-b",
        serde_json::json!({"name": "twice"}),
    );
    assert_eq!(s3, 201);
    assert_ne!(third["id"], first["id"]);
    let (s4, refused) = create(
        "/admin/alert-channels",
        "key-a",
        serde_json::json!({"type": "webhook", "endpoint": "https://hooks.example.com/x"}),
    );
    assert_eq!(s4, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap()),
        "{refused}"
    );
}
