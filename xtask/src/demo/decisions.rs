//! Steps 9 and 10: what the gateway decides for the agent, asked (GET /proxy/check) and acted on
//! (calls through ALL /proxy/* to the upstream), and the alert the deny raised. The demo fails
//! when the gateway decides otherwise than examples/policies/code-review.yaml says, or when the
//! alert does not arrive signed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::admin::Receiver;
use super::gateway::Api;
use super::step;

/// Steps 9 and 10, then the alert: every difference from the policy is named before failing.
pub(super) fn check(api: &Api, agent_token: &str, receiver: &Receiver) -> anyhow::Result<()> {
    let mut differences = ask(api, agent_token)?;
    differences.extend(call_through(api, agent_token)?);
    if !differences.is_empty() {
        bail!(
            "the gateway did not decide as the demo's policy says: {}",
            differences.join("; ")
        );
    }
    // The deny above raised an alert: show what the receiver got, and that it was signed.
    show_alert(api, receiver)
}

/// Step 9: the decisions as the agent asks for them; returns how they differ from the policy.
fn ask(api: &Api, agent_token: &str) -> anyhow::Result<Vec<String>> {
    step("asking for decisions as the agent (GET /proxy/check)");
    // What examples/policies/code-review.yaml decides for its agent.
    let mut differences = Vec::new();
    for (action, want) in [
        ("read:api/repos/meshguard", 200),
        ("delete:prod/customers", 403),
        ("write:api/repos/meshguard/settings", 403),
    ] {
        let resp = api
            .client
            .get(format!("{}/proxy/check", api.base))
            .bearer_auth(agent_token)
            .header("X-MeshGuard-Action", action)
            .send()
            .with_context(|| format!("GET /proxy/check {action}: the gateway did not answer"))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .with_context(|| format!("GET /proxy/check {action}: the answer is not JSON"))?;
        println!(
            "    {action:<38} -> {status} {:<5} policy={} rule={} ({})",
            body["decision"].as_str().unwrap_or("?"),
            body["policy"].as_str().unwrap_or("-"),
            body["rule"].as_str().unwrap_or("-"),
            body["reason"].as_str().unwrap_or("")
        );
        if status != want {
            differences.push(format!(
                "GET /proxy/check {action}: {status}, expected {want}"
            ));
        }
    }
    Ok(differences)
}

/// Step 10: calls through the gateway to the upstream; returns how they differ from the policy.
fn call_through(api: &Api, agent_token: &str) -> anyhow::Result<Vec<String>> {
    step("calls through the gateway to the upstream (ALL /proxy/*)");
    let mut differences = Vec::new();
    for (method, want, want_decision) in [
        (reqwest::Method::GET, 200, "allow"),
        (reqwest::Method::DELETE, 403, "deny"),
    ] {
        let path = "/proxy/api/repos/meshguard";
        let resp = api
            .client
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(agent_token)
            .send()
            .with_context(|| format!("{method} {path}: the gateway did not answer"))?;
        let status = resp.status().as_u16();
        let decision = resp
            .headers()
            .get("x-meshguard-decision")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let text = resp
            .text()
            .with_context(|| format!("{method} {path}: cannot read the answer"))?;
        println!(
            "    {method:<6} {path} -> {status} (X-MeshGuard-Decision: {decision}) {}",
            shown(&text)
        );
        if status != want || decision != want_decision {
            differences.push(format!(
                "{method} {path}: {status} {decision}, expected {want} {want_decision}"
            ));
        }
    }
    Ok(differences)
}

/// A refusal is the gateway's JSON: what it says, whole; an upstream's answer as it came.
fn shown(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v.get("decision").is_some() => format!(
            "decision={} policy={} rule={} reason: {}",
            v["decision"].as_str().unwrap_or("?"),
            v["policy"].as_str().unwrap_or("-"),
            v["rule"].as_str().unwrap_or("-"),
            v["reason"].as_str().unwrap_or("-")
        ),
        _ => text.trim().to_owned(),
    }
}

/// The alert the deny raised, as the receiver got it: there within 10 s, every one signed.
fn show_alert(api: &Api, receiver: &Receiver) -> anyhow::Result<()> {
    let received = wait_for_alerts(api, receiver);
    match received.first() {
        Some(a) => println!(
            "    alert delivered to {}: trigger={} event={} signature valid={} ({} alert(s))",
            receiver.url,
            a["trigger"].as_str().unwrap_or("?"),
            a["event"].as_str().unwrap_or("?"),
            a["signatureValid"],
            received.len()
        ),
        None => bail!("the deny raised no alert at the receiver within 10 s"),
    }
    if received
        .iter()
        .any(|a| a["signatureValid"] != Value::Bool(true))
    {
        bail!("an alert reached the receiver with a bad signature: {received:?}");
    }
    Ok(())
}

/// What the receiver has recorded, as soon as it has something or after 10 s.
fn wait_for_alerts(api: &Api, receiver: &Receiver) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<Value> = api
            .client
            .get(format!("{}/received", receiver.url))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        if !got.is_empty() || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
