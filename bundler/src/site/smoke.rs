//! The runbook's smoke tests, run against the installed gateway as a client would: an allowed
//! and a denied decision for a throw-away agent, both found in the audit log, the log verified,
//! and its signed checkpoint checked here, offline, against the log's published key.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct Gateway {
    pub url: String,
    admin: String,
    client: Client,
}

/// One smoke test's result as the transcript records it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// passed | failed | not-available
    pub result: String,
    pub detail: String,
}

impl Check {
    fn new(name: &str, result: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            result: result.into(),
            detail: detail.into(),
        }
    }
    pub fn passed(&self) -> bool {
        self.result != "failed"
    }
}

impl Gateway {
    pub fn new(url: String, admin: String) -> Result<Self> {
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        Ok(Self { url, admin, client })
    }

    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("X-Admin-Token", &self.admin)
    }

    /// Sends an admin call that must answer `want`; returns its JSON body.
    pub fn send(&self, req: RequestBuilder, want: u16, what: &str) -> Result<Value> {
        let resp = req
            .send()
            .with_context(|| format!("{what}: the gateway at {} did not answer", self.url))?;
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        if status != want {
            bail!("{what}: the gateway answered {status}, not {want}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn healthy(&self) -> bool {
        self.client
            .get(format!("{}/health", self.url))
            .timeout(Duration::from_secs(3))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    fn check(&self, token: &str, action: &str, trace: &str) -> Result<u16> {
        Ok(self
            .client
            .get(format!("{}/proxy/check", self.url))
            .bearer_auth(token)
            .header("X-MeshGuard-Action", action)
            .header("X-Trace-Id", trace)
            .send()
            .with_context(|| format!("the gateway at {} did not answer /proxy/check", self.url))?
            .status()
            .as_u16())
    }
}

/// Starts a guardian sidecar pod for the smoke agent `(id, token)` and checks its heartbeat;
/// the pod is gone again when it returns.
pub type SidecarSmoke<'a> = &'a dyn Fn(&str, &str) -> Result<String>;

/// Runs every smoke test; a throw-away agent and policy are removed afterwards (revoked and
/// deleted: the audit log keeps what they did).
pub fn run(
    gw: &Gateway,
    nonce: &str,
    egress: Option<u16>,
    sidecar: Option<SidecarSmoke<'_>>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let name = format!("meshguard-smoke-{nonce}");
    let made = (|| -> Result<(String, String)> {
        let policy = format!(
            "name: {name}\nappliesTo: [{name}]\nrules:\n  - name: smoke-allow\n    effect: allow\n    actions: [\"read:meshguard-smoke/*\"]\n"
        );
        let p = gw.send(
            gw.admin(Method::POST, "/admin/policies")
                .json(&json!({"name": name, "content": policy})),
            201,
            "creating the smoke-test policy",
        )?;
        let a = gw.send(
            gw.admin(Method::POST, "/admin/agents")
                .json(&json!({"name": name, "trustTier": "verified"})),
            201,
            "creating the smoke-test agent",
        )?;
        let token = a["token"]
            .as_str()
            .context("no token for the smoke agent")?;
        let _ = p;
        Ok((
            a["id"].as_str().unwrap_or_default().to_owned(),
            token.to_owned(),
        ))
    })();
    let (agent_id, token) = match made {
        Ok(x) => x,
        Err(e) => {
            checks.push(Check::new("policy allow", "failed", format!("{e:#}")));
            return checks;
        }
    };
    let allow_trace = format!("smoke-allow-{nonce}");
    let deny_trace = format!("smoke-deny-{nonce}");
    checks.push(decision(
        gw,
        "policy allow",
        &token,
        "read:meshguard-smoke/status",
        &allow_trace,
        200,
    ));
    checks.push(decision(
        gw,
        "policy deny",
        &token,
        "write:meshguard-smoke/status",
        &deny_trace,
        403,
    ));
    checks.push(match audit_has(gw, &[&allow_trace, &deny_trace]) {
        Ok(d) => Check::new("audit write", "passed", d),
        Err(e) => Check::new("audit write", "failed", format!("{e:#}")),
    });
    checks.push(match signed_checkpoint(gw) {
        Ok(d) => Check::new("offline signature verification", "passed", d),
        Err(e) => Check::new("offline signature verification", "failed", format!("{e:#}")),
    });
    checks.push(match sidecar {
        Some(start) => match start(&agent_id, &token) {
            Ok(d) => Check::new("sidecar heartbeat", "passed", d),
            Err(e) => Check::new("sidecar heartbeat", "failed", format!("{e:#}")),
        },
        None => Check::new(
            "sidecar heartbeat",
            "not-available",
            "a candidate is smoke-tested without a sidecar pod; the version that runs after the switch is",
        ),
    });
    checks.push(match egress {
        Some(port) => match egress_denied(gw, port, nonce) {
            Ok(d) => Check::new("egress denial", "passed", d),
            Err(e) => Check::new("egress denial", "failed", format!("{e:#}")),
        },
        None => Check::new(
            "egress denial",
            "not-available",
            "the media carries no egress allowlist, so no egress proxy runs",
        ),
    });
    checks.push(Check::new(
        "evidence export",
        "not-available",
        "evidence bundles are not built yet (issue #16); the audit export is covered by 'audit write'",
    ));
    // Clean up: revoke the agent, delete the policy. A failure here is reported, not hidden.
    let cleanup = gw
        .send(
            gw.admin(Method::DELETE, &format!("/admin/agents/{agent_id}")),
            200,
            "revoking the smoke-test agent",
        )
        .and_then(|_| {
            gw.send(
                gw.admin(Method::DELETE, &format!("/admin/policies/{name}")),
                200,
                "deleting the smoke-test policy",
            )
        });
    if let Err(e) = cleanup {
        checks.push(Check::new("cleanup", "failed", format!("{e:#}")));
    }
    checks
}

/// A destination no allowlist names is refused by the egress proxy and the refusal audited.
fn egress_denied(gw: &Gateway, port: u16, nonce: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let target = format!("meshguard-smoke-{nonce}.invalid:443");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("the egress proxy does not answer on 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).unwrap_or("");
    if status != "403" {
        bail!(
            "CONNECT {target} answered {:?}, not 403",
            answer.lines().next().unwrap_or("")
        );
    }
    let page = gw.send(
        gw.admin(Method::GET, "/admin/audit?limit=50"),
        200,
        "reading the audit log",
    )?;
    let audited =
        page["entries"].as_array().into_iter().flatten().any(|e| {
            e["event"] == "egress_denied" && e["resource"].as_str() == Some(target.as_str())
        });
    if !audited {
        bail!("the refusal of {target} is not in the audit log");
    }
    Ok(format!("CONNECT {target} -> 403, audited as egress_denied"))
}

fn decision(gw: &Gateway, name: &str, token: &str, action: &str, trace: &str, want: u16) -> Check {
    match gw.check(token, action, trace) {
        Ok(got) if got == want => Check::new(name, "passed", format!("{action} -> {got}")),
        Ok(got) => Check::new(
            name,
            "failed",
            format!("{action} -> {got}, expected {want}"),
        ),
        Err(e) => Check::new(name, "failed", format!("{e:#}")),
    }
}

/// The two smoke decisions are in the audit log and the log verifies.
fn audit_has(gw: &Gateway, traces: &[&str]) -> Result<String> {
    let page = gw.send(
        gw.admin(Method::GET, "/admin/audit?limit=200"),
        200,
        "reading the audit log",
    )?;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    for t in traces {
        if !entries.iter().any(|e| e["traceId"].as_str() == Some(t)) {
            bail!("no audit entry has trace id {t}");
        }
    }
    let report = gw.send(
        gw.admin(Method::GET, "/admin/audit/verify"),
        200,
        "verifying the audit log",
    )?;
    if report["valid"] != Value::Bool(true) {
        bail!("the audit log does not verify: {report}");
    }
    Ok(format!(
        "both decisions audited; the log verifies ({} entries)",
        report["entries"]
    ))
}

/// Asks for a signed checkpoint and checks its signature here with the log's verifier key:
/// a C2SP signed note, Ed25519 (key type 0x01).
fn signed_checkpoint(gw: &Gateway) -> Result<String> {
    let cp = gw.send(
        gw.admin(Method::POST, "/admin/audit/checkpoint"),
        200,
        "signing a checkpoint",
    )?;
    let note = cp["checkpoint"].as_str().context("no checkpoint")?;
    let vkey = cp["vkey"].as_str().context("no verifier key")?;
    crate::note::verify_note(note, vkey)?;
    let size = note.lines().nth(1).unwrap_or("?");
    Ok(format!(
        "checkpoint of {size} entries verified against {vkey}"
    ))
}
