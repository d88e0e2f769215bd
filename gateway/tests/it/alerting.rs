//! Alerts reach a real receiver signed with HMAC, never slow a decision, and are kept when
//! undeliverable.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Gateway, Options, PythonServer, agent, policy, tempdir};

const SECRET: &str = "whsec-receiver-3c5e7a9b1d";

struct Receiver(PythonServer);

impl Receiver {
    fn start() -> Self {
        Self(PythonServer::start("receiver.py", &[SECRET]))
    }
}

const READS: &str =
    "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n";

#[test]
fn denials_and_bypass_attempts_reach_a_real_receiver_signed() {
    let rx = Receiver::start();
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    let (status, _) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": format!("{}/hook", rx.0.url), "webhookSecret": SECRET, "triggers": ["deny"]}),
    );
    assert_eq!(status, 201);
    let (_, token) = agent(&gw, "writer", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);
    assert_eq!(gw.check(&token, "write:prod/db").0, 403);
    let (status, _) = crate::harness::json(
        gw.raw(reqwest::Method::GET, "/proxy/check")
            .header("X-MeshGuard-Action", "read:x")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);

    let got = rx.0.received(2);
    assert_eq!(got.len(), 2, "{got:?}");
    for d in &got {
        assert_eq!(
            d["signatureValid"], true,
            "the receiver's own HMAC check: {d}"
        );
        assert_eq!(
            (d["event"].as_str(), d["trigger"].as_str()),
            (Some("alert"), Some("deny"))
        );
        assert_eq!(d["body"]["event"], "meshguard.alert");
        assert_eq!(d["body"]["version"], "1.0");
        assert!(d["body"]["id"].as_str().unwrap().starts_with("alert_"));
    }
    let deny = got
        .iter()
        .find(|d| d["body"]["entry"]["action"] == "write:prod/db")
        .expect("the denial");
    assert_eq!(
        (
            deny["body"]["severity"].as_str(),
            deny["body"]["entry"]["agentName"].as_str()
        ),
        (Some("warning"), Some("writer"))
    );
    assert_eq!(deny["body"]["title"], "Policy Denied: writer");
    let bypass = got
        .iter()
        .find(|d| d["body"]["entry"]["event"] == "bypass_attempt")
        .expect("the bypass attempt");
    assert_eq!(bypass["body"]["severity"], "critical");
    assert_eq!(bypass["body"]["entry"]["decision"], "deny");
}

#[test]
fn severity_thresholds_filter_and_undeliverable_alerts_are_kept() {
    let rx = Receiver::start();
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("ALERT_RETRY_ATTEMPTS", "3".into()),
            ("ALERT_RETRY_BACKOFF_MS", "20".into()),
        ]),
    );
    policy(&gw, "reads", READS);
    // Only critical alerts; and a channel whose receiver always fails.
    gw.post("/admin/alert-channels", json!({"type": "webhook", "endpoint": format!("{}/critical", rx.0.url), "severity": "critical"}));
    gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": format!("{}/fail", rx.0.url)}),
    );
    let (_, token) = agent(&gw, "a", "verified", &[]);
    let started = Instant::now();
    assert_eq!(gw.check(&token, "write:x").0, 403);
    assert_eq!(gw.check(&token, "admin:rotate").0, 403);
    // Decisions do not wait for deliveries: three failing attempts with backoff run after.
    let got = rx.0.received(1 + 2 * 3);
    let critical: Vec<&Value> = got.iter().filter(|d| d["path"] == "/critical").collect();
    assert_eq!(
        critical.len(),
        1,
        "only the admin denial is critical: {got:?}"
    );
    assert_eq!(critical[0]["body"]["entry"]["action"], "admin:rotate");
    assert_eq!(
        got.iter().filter(|d| d["path"] == "/fail").count(),
        6,
        "two alerts, three attempts each"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let (_, body) = gw.get("/admin/alerts/undelivered");
        let list = body["alerts"].as_array().unwrap().clone();
        if list.len() >= 2 || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0]["attempts"], 3);
    assert!(
        kept[0]["lastError"].as_str().unwrap().contains("500"),
        "{kept:?}"
    );
    // Every outcome per channel is recorded for evidence: the critical delivery, and the two
    // the failing channel never took; no endpoint or secret among them.
    // The delivery row of a kept alert is written just after it is kept: wait for the rows.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (_, body) = gw.get("/admin/alerts/deliveries");
        let n = body["deliveries"].as_array().map_or(0, Vec::len);
        if n >= 3 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let all = body["deliveries"].as_array().unwrap();
    let outcomes = |o: &str| all.iter().filter(|d| d["outcome"] == o).count();
    assert_eq!(
        (outcomes("delivered"), outcomes("undelivered")),
        (1, 2),
        "{body}"
    );
    let delivered = all.iter().find(|d| d["outcome"] == "delivered").unwrap();
    assert_eq!(delivered["severity"], "critical");
    assert_eq!(delivered["attempts"], 1);
    assert!(
        delivered["entryId"].as_str().unwrap().starts_with("aud_"),
        "{delivered}"
    );
    assert!(
        !body.to_string().contains(&rx.0.url),
        "endpoints stay out: {body}"
    );
    let (_, none) = gw.get("/admin/alerts/deliveries?from=2099-01-01T00:00:00Z");
    assert_eq!(none["deliveries"], json!([]));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn the_per_minute_throttle_drops_the_excess() {
    let rx = Receiver::start();
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("ALERT_RATE_LIMIT", "2".into()),
            ("ALERT_WEBHOOK_URL", format!("{}/env", rx.0.url)),
            ("ALERT_WEBHOOK_SECRET", SECRET.into()),
        ]),
    );
    let (_, token) = agent(&gw, "a", "verified", &[]);
    for i in 0..5 {
        assert_eq!(
            gw.check(&token, &format!("write:{i}")).0,
            403,
            "no policy applies: every call is denied"
        );
    }
    let got = rx.0.received(2);
    // Give any excess alert time to arrive, then check none did.
    std::thread::sleep(Duration::from_secs(1));
    let got_later = rx.0.received(0);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got_later.len(), 2, "{got_later:?}");
    assert!(
        got.iter()
            .all(|d| d["signatureValid"] == true && d["path"] == "/env")
    );
}

/// Issue #32 item 8: a receiver that answers 307 does not bounce the signed alert to another
/// port; the alert is kept as undelivered, saying what the receiver answered.
#[test]
fn a_redirecting_receiver_does_not_bounce_the_alert() {
    let bouncer = Receiver::start();
    let elsewhere = Receiver::start();
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("ALERT_RETRY_ATTEMPTS", "2".into()),
            ("ALERT_RETRY_BACKOFF_MS", "20".into()),
        ]),
    );
    policy(&gw, "reads", READS);
    let (status, body) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": format!("{}/redirect?to={}/stolen", bouncer.0.url, elsewhere.0.url)}),
    );
    assert_eq!(status, 201, "{body}");
    let (_, token) = agent(&gw, "a", "verified", &[]);
    assert_eq!(gw.check(&token, "write:x").0, 403);
    assert_eq!(
        bouncer.0.received(2).len(),
        2,
        "two attempts at the receiver"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let kept = loop {
        let (_, body) = gw.get("/admin/alerts/undelivered");
        let list = body["alerts"].as_array().unwrap().clone();
        if !list.is_empty() || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        kept[0]["lastError"].as_str().unwrap().contains("307"),
        "{kept:?}"
    );
    assert!(
        elsewhere.0.received(0).is_empty(),
        "the alert never reached where the receiver pointed"
    );
}

/// Issue #32 item 8: alert endpoints on loopback, link-local and metadata addresses, in any
/// spelling, are refused unless the site allows the host by name; so is a webhook URL that
/// carries credentials.
#[test]
fn alert_endpoints_obey_the_sites_destination_policy() {
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("ALERT_DESTINATIONS_ALLOWED", "".into())]),
    );
    for endpoint in [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/x",
        "http://0/x",
        "http://0x7f.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://metadata.google.internal/x",
        "https://user:password@hooks.example.com/x",
    ] {
        let (status, body) = gw.post(
            "/admin/alert-channels",
            json!({"type": "webhook", "endpoint": endpoint}),
        );
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("endpoint")),
            "{endpoint}: {body}"
        );
    }
    let (status, _) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://hooks.example.com/x"}),
    );
    assert_eq!(status, 201);
    let (_, list) = gw.get("/admin/alert-channels");
    assert_eq!(list["channels"].as_array().unwrap().len(), 1);

    // The same for the environment's webhook: the gateway does not start with one on loopback.
    let out = crate::harness::command(
        dir.path(),
        &Options::with(vec![
            ("ALERT_DESTINATIONS_ALLOWED", "".into()),
            ("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook".into()),
        ]),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("ALERT_WEBHOOK_URL") && why.contains("ALERT_DESTINATIONS_ALLOWED"),
        "{why}"
    );
}

/// Slack and PagerDuty channels deliver bodies those services accept: a receiver that reads
/// them as Slack's incoming webhooks and PagerDuty's Events API v2 document them
/// (`support/services.py`) takes every alert, including those whose agent-chosen text is long
/// (over Slack's 150-character header and 3000-character section, PagerDuty's 1024-character
/// summary) or holds Slack's control sequences (`<!channel>`, a link), which must arrive
/// escaped rather than notify a channel.
#[test]
fn slack_and_pagerduty_receive_bodies_their_apis_accept_whatever_the_agent_sent() {
    let services = PythonServer::start("services.py", &[]);
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "reads", READS);
    for channel in [
        json!({"type": "slack", "endpoint": format!("{}/services/T0001/B0001/abcdef", services.url), "slackChannel": "#alerts"}),
        json!({"type": "pagerduty", "endpoint": format!("{}/v2/enqueue", services.url), "pagerdutyRoutingKey": "R0123456789abcdef0123456789abcde"}),
    ] {
        let (status, body) = gw.post("/admin/alert-channels", channel);
        assert_eq!(status, 201, "{body}");
    }
    let (_, token) = agent(&gw, "writer", "verified", &[]);
    let long = format!("write:{}", "x".repeat(5000));
    for action in [
        "write:prod/db",
        long.as_str(),
        "write:<!channel> & <https://evil.example|click here>",
    ] {
        assert_eq!(gw.check(&token, action).0, 403, "{action}");
    }
    // A bypass attempt whose title carries a long path.
    let path = format!("/proxy/{}", "p".repeat(300));
    let status = gw.raw(reqwest::Method::GET, &path).send().unwrap().status();
    assert_eq!(status, 401);

    let got = services.received(8);
    assert_eq!(got.len(), 8, "four alerts on two channels: {got:?}");
    for r in &got {
        let shown: String = r["body"].to_string().chars().take(400).collect();
        assert_eq!(
            r["errors"],
            json!([]),
            "{} refused an alert: {shown}",
            r["service"]
        );
    }
    // The escaped text is still there to read, and the whole of what was sent is in the
    // gateway's audit log (the alert is the pointer, the entry the record).
    let slack: Vec<&Value> = got.iter().filter(|r| r["service"] == "slack").collect();
    assert!(
        slack.iter().any(|r| r["body"]
            .to_string()
            .contains("&lt;!channel&gt; &amp; &lt;https://evil.example")),
        "{slack:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = gw.get("/admin/alerts/deliveries");
        let all = body["deliveries"].as_array().unwrap().clone();
        if all.len() >= 8 {
            assert!(all.iter().all(|d| d["outcome"] == "delivered"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
