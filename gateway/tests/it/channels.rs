//! `/admin/alert-channels`: CRUD with write-only secrets and type-dependent requirements.

use serde_json::json;

use crate::harness::{Gateway, tempdir};

#[test]
fn crud_with_write_only_secrets() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, created) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://hooks.example.com/mg", "severity": "warning",
               "triggers": ["deny", "rate_limit"], "webhook_secret": "whsec-very-secret-value"}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("channel_"));
    assert_eq!(
        (
            created["webhookSecretSet"].as_bool(),
            created["triggers"].clone()
        ),
        (Some(true), json!(["deny", "rate_limit"]))
    );

    let (status, got) = gw.get(&format!("/admin/alert-channels/{id}"));
    assert_eq!((status, got["severity"].as_str()), (200, Some("warning")));
    let (status, updated) = gw.patch(
        &format!("/admin/alert-channels/{id}"),
        json!({"severity": "critical"}),
    );
    assert_eq!(
        (
            status,
            updated["severity"].as_str(),
            updated["webhookSecretSet"].as_bool()
        ),
        (200, Some("critical"), Some(true))
    );
    let (status, _) = gw.put(
        &format!("/admin/alert-channels/{id}"),
        json!({"webhookSecret": "rotated-secret-value-2"}),
    );
    assert_eq!(status, 200);
    let (_, list) = gw.get("/admin/alert-channels");
    assert_eq!(list["channels"].as_array().unwrap().len(), 1);

    let (_, changes) = gw.get("/admin/changes?kind=alert_channel");
    let everything = format!("{list}{got}{updated}{changes}");
    assert!(
        !everything.contains("whsec-very-secret-value")
            && !everything.contains("rotated-secret-value-2")
    );
    let rotation = &changes["changes"][2];
    assert_eq!(rotation["fields"], json!(["webhookSecret"]), "{rotation}");

    let (status, body) = gw.delete(&format!("/admin/alert-channels/{id}"));
    assert_eq!((status, body["status"].as_str()), (200, Some("deleted")));
    assert_eq!(gw.get(&format!("/admin/alert-channels/{id}")).0, 404);
    assert_eq!(gw.delete(&format!("/admin/alert-channels/{id}")).0, 404);
}

#[test]
fn type_dependent_fields_are_required() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "slack", "endpoint": "https://hooks.slack.com/services/T/B/x"}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("slackChannel")),
        "{body}"
    );
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "pagerduty", "endpoint": "https://events.pagerduty.com/v2/enqueue"}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("pagerdutyRoutingKey"))
    );
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "carrier-pigeon", "endpoint": "https://x"}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("type")),
        "{body}"
    );
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "ftp://x"}),
    );
    assert_eq!((status, body["field"].as_str()), (400, Some("endpoint")));
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://x", "severity": "loud"}),
    );
    assert_eq!((status, body["field"].as_str()), (400, Some("severity")));
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://x", "triggers": ["deny", "boom"]}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("triggers[1]")),
        "{body}"
    );

    let (status, slack) = gw.post(
        "/admin/alert-channels",
        json!({"type": "slack", "endpoint": "https://hooks.slack.com/services/T/B/x", "slack_channel": "#alerts"}),
    );
    assert_eq!(
        (status, slack["slackChannel"].as_str()),
        (201, Some("#alerts"))
    );
    let id = slack["id"].as_str().unwrap();
    let (status, body) = gw.patch(
        &format!("/admin/alert-channels/{id}"),
        json!({"type": "pagerduty"}),
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("pagerdutyRoutingKey")),
        "an update cannot break the rules either"
    );
    assert_eq!(
        gw.get(&format!("/admin/alert-channels/{id}")).1["type"],
        "slack"
    );
}

/// Alert-channel secrets are sealed in the database with a key kept beside it
/// (`SECRETS_KEY_FILE`), still work after a restart, and a lost key stops the start rather than
/// losing them (issue #12 item 8).
#[test]
fn channel_secrets_are_sealed_at_rest_and_a_lost_key_is_not_replaced() {
    let dir = tempdir();
    let key = dir.path().join("keys/secrets.key");
    let opts =
        || crate::harness::Options::with(vec![("SECRETS_KEY_FILE", key.display().to_string())]);
    let gw = Gateway::start_with(dir.path(), opts());
    let slack_url = "https://hooks.slack.com/services/T0SEALED/B0SEALED/sealedsecretvalue";
    for body in [
        json!({"type": "webhook", "endpoint": "https://hooks.example.com/mg", "webhook_secret": "whsec-sealed-at-rest-value"}),
        json!({"type": "slack", "endpoint": slack_url, "slackChannel": "#meshguard-alerts"}),
        json!({"type": "pagerduty", "endpoint": "https://events.pagerduty.com/v2/enqueue", "pagerduty_routing_key": "pd-routing-sealed-value"}),
    ] {
        let (status, created) = gw.post("/admin/alert-channels", body);
        assert_eq!(status, 201, "{created}");
    }
    let on_disk = || {
        let mut bytes = Vec::new();
        for f in ["data/meshguard.db", "data/meshguard.db-wal"] {
            bytes.extend(std::fs::read(dir.path().join(f)).unwrap_or_default());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let disk = on_disk();
    for secret in [
        "whsec-sealed-at-rest-value",
        "sealedsecretvalue",
        "pd-routing-sealed-value",
    ] {
        assert!(
            !disk.contains(secret),
            "{secret} is not in the database files"
        );
    }
    assert!(disk.contains("mgsecret1:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    drop(gw);

    // After a restart the secrets still open: the Slack URL's digest is the one of the URL
    // given, while reads and change records show only its host, never the URL.
    let gw = Gateway::start_with(dir.path(), opts());
    let (_, list) = gw.get("/admin/alert-channels");
    let (_, changes) = gw.get("/admin/changes");
    let text = format!("{list} {changes}");
    assert!(!text.contains("sealedsecretvalue"), "{text}");
    let slack = list["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == json!("slack"))
        .unwrap();
    assert_eq!(slack["endpoint"], json!("https://hooks.slack.com/\u{2026}"));
    use sha2::Digest as _;
    assert_eq!(
        slack["endpointDigest"],
        json!(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(slack_url))
        ))
    );
    drop(gw);

    // A lost key is not silently replaced: the start is refused, naming the key it needs.
    std::fs::rename(&key, dir.path().join("moved.key")).unwrap();
    let out = crate::harness::command(dir.path(), &opts())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("is missing") && why.contains("restore that key file"),
        "{why}"
    );
    assert!(!key.exists(), "no new key was made");
}
