//! The admin's writes through the gateway's API (steps 6 to 8: an agent, a policy with an
//! approver and a change ticket, an alert channel to a receiver on loopback) and their change
//! record (step 11).

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde_json::json;

use super::gateway::Api;
use super::{Running, random_hex, step};
use crate::root;

/// Step 6: registers the agent the demo asks decisions as; returns its token (kept in memory).
pub(super) fn register_agent(api: &Api) -> anyhow::Result<String> {
    step("registering an agent (POST /admin/agents)");
    let agent = api.send(
        api.admin(reqwest::Method::POST, "/admin/agents")
            .json(&json!({
                "name": "code-reviewer", "trustTier": "verified", "tags": ["ci", "code-review"],
                "metadata": {"team": "platform"}
            })),
        201,
    )?;
    let agent_id = agent["id"].as_str().unwrap_or_default();
    let agent_token = agent["token"].as_str().unwrap_or_default().to_owned();
    println!(
        "    agent {agent_id} ({}), token issued (shown once, kept in memory only)",
        agent["trustTier"]
    );
    Ok(agent_token)
}

/// Step 7: examples/policies/code-review.yaml, with an approver and a change ticket.
pub(super) fn add_policy(api: &Api) -> anyhow::Result<()> {
    step("adding a policy with an approver and a change ticket (POST /admin/policies)");
    let path = root().join("examples/policies/code-review.yaml");
    let content =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let policy = api.send(
        api.admin(reqwest::Method::POST, "/admin/policies")
            .header("X-MeshGuard-Approver", "alice@example.com")
            .header("X-MeshGuard-Change-Ticket", "CHG-1001")
            .json(&json!({"name": "code-review-policy", "content": content})),
        201,
    )?;
    println!(
        "    policy {} ({}), {} rules, digest {}",
        policy["id"],
        policy["name"],
        policy["rules"].as_array().map_or(0, Vec::len),
        policy["digest"]
    );
    Ok(())
}

/// The alert receiver on loopback, stopped when dropped.
pub(super) struct Receiver {
    pub(super) url: String,
    _running: Running,
}

/// Step 8: a webhook channel with a write-only secret, to a receiver on 127.0.0.1 that checks
/// the signature of what it receives.
pub(super) fn add_alert_channel(api: &Api) -> anyhow::Result<Receiver> {
    step(
        "adding an alert channel with a write-only secret (POST /admin/alert-channels), to a receiver on 127.0.0.1 that checks the signature",
    );
    let webhook_secret = random_hex(16)?;
    let receiver = start_receiver(&webhook_secret)?;
    let channel = api.send(
        api.admin(reqwest::Method::POST, "/admin/alert-channels").json(&json!({
            "type": "webhook", "endpoint": format!("{}/meshguard", receiver.url),
            "severity": "warning", "triggers": ["deny", "rate_limit"], "webhookSecret": webhook_secret
        })),
        201,
    )?;
    println!(
        "    channel {} ({}), webhookSecretSet={}",
        channel["id"], channel["type"], channel["webhookSecretSet"]
    );
    Ok(receiver)
}

/// A real receiver on loopback (the one the gateway's alerting tests use): it records every
/// alert and checks X-MeshGuard-Signature with Python's hmac. Nothing leaves the machine.
fn start_receiver(webhook_secret: &str) -> anyhow::Result<Receiver> {
    let mut child = Command::new("python3")
        .arg(root().join("gateway/tests/it/support/receiver.py"))
        .arg(webhook_secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the alert receiver (python3)")?;
    let stdout = child.stdout.take().expect("piped");
    let running = Running { child };
    let mut port = String::new();
    BufReader::new(stdout)
        .read_line(&mut port)
        .context("the alert receiver did not print its port")?;
    Ok(Receiver {
        url: format!("http://127.0.0.1:{}", port.trim()),
        _running: running,
    })
}

/// Step 11: the change record of the writes above (GET /admin/changes).
pub(super) fn show_changes(api: &Api) -> anyhow::Result<()> {
    step("the change record of those writes (GET /admin/changes)");
    let changes = api.get("/admin/changes")?;
    for c in changes["changes"].as_array().into_iter().flatten() {
        println!(
            "    #{} {} {} {} {} approver={} ticket={} digest={}",
            c["seq"],
            c["timestamp"].as_str().unwrap_or(""),
            c["operation"].as_str().unwrap_or(""),
            c["kind"].as_str().unwrap_or(""),
            c["objectId"].as_str().unwrap_or(""),
            c["approver"].as_str().unwrap_or("-"),
            c["changeTicket"].as_str().unwrap_or("-"),
            c["newDigest"]
                .as_str()
                .map_or("-", |d| &d[..d.len().min(19)])
        );
    }
    Ok(())
}
