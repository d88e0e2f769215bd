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
