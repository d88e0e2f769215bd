//! OpenTelemetry export (cargo feature `otel`): decision spans reach an OTLP/HTTP receiver.

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::harness::{Gateway, Options, PythonServer, agent, policy, tempdir};

#[test]
fn decision_spans_are_exported_over_otlp_http() {
    let rx = PythonServer::start("receiver.py", &[]);
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]),
    );
    policy(
        &gw,
        "reads",
        "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (id, token) = agent(&gw, "traced", "verified", &[]);
    assert_eq!(gw.check(&token, "read:traced-thing").0, 200);

    let deadline = Instant::now() + Duration::from_secs(60);
    let (content_type, body) = loop {
        let got: Vec<serde_json::Value> = reqwest::blocking::get(format!("{}/received", rx.url))
            .unwrap()
            .json()
            .unwrap();
        let found = got.iter().find_map(|r| {
            let body = base64::engine::general_purpose::STANDARD
                .decode(r["body"].as_str()?)
                .ok()?;
            let text = String::from_utf8_lossy(&body).into_owned();
            text.contains("meshguard.decision")
                .then(|| (r["contentType"].as_str().unwrap_or("").to_owned(), text))
        });
        if let Some(f) = found {
            assert!(got.iter().all(|r| r["path"] == "/v1/traces"), "{got:?}");
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no decision span arrived: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(content_type, "application/x-protobuf");
    for expected in [
        "meshguard-gateway",
        "read:traced-thing",
        id.as_str(),
        "allowed",
    ] {
        assert!(
            body.contains(expected),
            "{expected} missing from the exported span"
        );
    }
    assert!(
        !body.contains(&token),
        "the agent's token never reaches the traces"
    );
}
