//! The runbook's smoke tests, run against the installed gateway as a client would: an allowed
//! and a denied decision for a throw-away agent, both found in the audit log, the log verified,
//! its signed checkpoint checked here, offline, against the log's published key, a guardian
//! sidecar's heartbeat, an egress denial, and a real evidence export of the smoke test's own
//! decisions, signed with the site's key and verified.
//!
//! Every check of the plan runs; one whose prerequisite is missing fails, saying what is
//! missing. The only other outcome is `skipped by operator`, for a check the operator named
//! on the command line (`--skip-smoke`); there is no passing "not available".

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
    /// passed | failed | skipped by operator
    pub result: String,
    pub detail: String,
}

/// The seven smoke tests of the runbook, by the names the transcript and `--skip-smoke` use.
pub const ALL: &[&str] = &[
    "policy allow",
    "policy deny",
    "audit write",
    "offline signature verification",
    "sidecar heartbeat",
    "egress denial",
    "evidence export",
];

/// The result of a check the operator skipped by name.
pub const SKIPPED: &str = "skipped by operator";

/// What the evidence-export smoke test needs: the site's key, which signs the bundle as it
/// signs the transcript, and the directory the bundle is kept in (the install's state).
#[derive(Debug)]
pub struct EvidenceSmoke<'a> {
    pub key: &'a crate::keys::MediaKey,
    pub dir: std::path::PathBuf,
}

/// Which checks to run and with what.
pub struct Plan<'a> {
    /// The egress proxy's port, when the media carries an allowlist.
    pub egress: Option<u16>,
    pub sidecar: Option<SidecarSmoke<'a>>,
    pub evidence: Option<EvidenceSmoke<'a>>,
    /// Checks the operator skipped by name.
    pub skip: &'a [String],
    /// Only the decision and audit checks: a candidate version smoke-tested beside the
    /// running one before the switch (the full plan runs after it).
    pub candidate: bool,
}

impl std::fmt::Debug for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("egress", &self.egress)
            .field("sidecar", &self.sidecar.is_some())
            .field("evidence", &self.evidence)
            .field("skip", &self.skip)
            .field("candidate", &self.candidate)
            .finish()
    }
}

/// Checks `--skip-smoke` names against the plan's checks.
pub fn check_skips(skip: &[String]) -> Result<()> {
    for s in skip {
        if !ALL.contains(&s.as_str()) {
            bail!(
                "--skip-smoke {s:?} names no smoke test; the smoke tests are: {}",
                ALL.join(", ")
            );
        }
    }
    Ok(())
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
        self.result == "passed" || self.result == SKIPPED
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

/// Runs every smoke test of `plan`; a throw-away agent and policy are removed afterwards
/// (revoked and deleted: the audit log keeps what they did).
pub fn run(gw: &Gateway, nonce: &str, plan: &Plan<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let name = format!("meshguard-smoke-{nonce}");
    let (agent_id, token) = match smoke_agent(gw, &name) {
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
    if !plan.candidate {
        checks.push(skippable(plan, "sidecar heartbeat", || {
            match plan.sidecar {
                Some(start) => start(&agent_id, &token),
                None => bail!("this install has no way to start a sidecar pod"),
            }
        }));
        checks.push(skippable(plan, "egress denial", || match plan.egress {
            Some(port) => egress_denied(gw, port, nonce),
            None => bail!(
                "no egress proxy runs: the media carries no signed egress allowlist (add one to the media, or skip this test by name with --skip-smoke \"egress denial\")"
            ),
        }));
        checks.push(skippable(plan, "evidence export", || {
            match &plan.evidence {
                Some(ev) => evidence_exported(gw, ev, nonce, started, &[&allow_trace, &deny_trace]),
                None => bail!("no key to sign an evidence bundle with"),
            }
        }));
    }
    if let Err(e) = clean_up(gw, &agent_id, &name) {
        checks.push(Check::new("cleanup", "failed", format!("{e:#}")));
    }
    checks
}

/// A throw-away policy and agent named `name`, the policy allowing the agent to read
/// `meshguard-smoke/*`: the agent's (id, token).
fn smoke_agent(gw: &Gateway, name: &str) -> Result<(String, String)> {
    let policy = format!(
        "name: {name}\nappliesTo: [{name}]\nrules:\n  - name: smoke-allow\n    effect: allow\n    actions: [\"read:meshguard-smoke/*\"]\n"
    );
    gw.send(
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
    Ok((
        a["id"].as_str().unwrap_or_default().to_owned(),
        token.to_owned(),
    ))
}

/// Clean up: revoke the agent, delete the policy. A failure here is reported, not hidden.
fn clean_up(gw: &Gateway, agent_id: &str, name: &str) -> Result<Value> {
    gw.send(
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
    })
}

/// Runs the check `name`, or records that the operator skipped it by name.
fn skippable(plan: &Plan<'_>, name: &str, run: impl FnOnce() -> Result<String>) -> Check {
    if plan.skip.iter().any(|s| s == name) {
        return Check::new(
            name,
            SKIPPED,
            "named with --skip-smoke; this check did not run",
        );
    }
    match run() {
        Ok(d) => Check::new(name, "passed", d),
        Err(e) => Check::new(name, "failed", format!("{e:#}")),
    }
}

/// The evidence profile the smoke test exports: it proves that export and offline verification
/// work on this site, with the smoke test's own decisions; a site's audits choose their own.
const SMOKE_PROFILE: &str = "airgapped-defense";

/// Exports an evidence bundle of the period of the smoke test, signed with the site's key,
/// verifies it offline with the site's public key and the log key the bundle names, and finds
/// the smoke decisions among its entries.
fn evidence_exported(
    gw: &Gateway,
    ev: &EvidenceSmoke<'_>,
    nonce: &str,
    from: chrono::DateTime<chrono::Utc>,
    traces: &[&str],
) -> Result<String> {
    use crate::evidence;
    let to = chrono::Utc::now() + chrono::Duration::seconds(1);
    let out = ev.dir.join(format!("smoke-{nonce}"));
    std::fs::create_dir_all(&ev.dir)
        .with_context(|| format!("cannot create {}", ev.dir.display()))?;
    let source = crate::audit_archive::Source {
        url: gw.url.clone(),
        admin_token: gw.admin.clone(),
        ca_bundle: None,
    };
    let (from_text, to_text) = (from.to_rfc3339(), to.to_rfc3339());
    evidence::export(&evidence::ExportOptions {
        source: &source,
        profile: SMOKE_PROFILE,
        from: &from_text,
        to: &to_text,
        out: &out,
        key: ev.key,
        transcript: None,
        // A site's witnesses cosign on their own schedule, not within the smoke test's second.
        allow_unwitnessed: true,
    })
    .context("exporting the smoke test's evidence")?;
    let public = ev.key.public();
    let verified = evidence::verify(
        &out,
        &evidence::VerifyOptions {
            pubkey: &public,
            log_vkey: None,
            witnesses: &[],
            quorum: 0,
            transcript_pubkey: None,
            list_denials: true,
            accept_unchecked: &[
                evidence::Unchecked::Witness,
                evidence::Unchecked::Transcript,
            ],
        },
    )
    .context("verifying the smoke test's evidence bundle")?;
    let failed: Vec<String> = verified
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    if !failed.is_empty() {
        bail!(
            "the evidence bundle {} does not verify: {}",
            out.display(),
            failed.join("; ")
        );
    }
    let entries = std::fs::read_to_string(out.join("audit/entries.jsonl"))
        .with_context(|| format!("cannot read the bundle's entries in {}", out.display()))?;
    for t in traces {
        if !entries.contains(&format!("\"traceId\":\"{t}\"")) {
            bail!(
                "the evidence bundle {} holds no entry with trace id {t}",
                out.display()
            );
        }
    }
    let ran = verified.checks.iter().filter(|c| c.ok).count();
    Ok(format!(
        "{} entries ({} allowed, {} denied) exported to {} ({SMOKE_PROFILE}), signed by {} and verified offline ({ran} checks); both smoke decisions are in it",
        entries.lines().count(),
        verified.decisions.allowed,
        verified.decisions.denied,
        out.display(),
        public.key_id(),
    ))
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
    meshguard_tlog::note::verify_note(note, vkey)?;
    let size = note.lines().nth(1).unwrap_or("?");
    Ok(format!(
        "checkpoint of {size} entries verified against {vkey}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runbooks_smoke_tests_can_be_skipped_and_a_skip_is_not_a_pass_by_another_name() {
        assert!(check_skips(&["egress denial".to_owned(), "evidence export".to_owned()]).is_ok());
        let err = check_skips(&["egress".to_owned()]).unwrap_err().to_string();
        assert!(
            err.contains("names no smoke test") && err.contains("egress denial"),
            "{err}"
        );
        let skipped = Check::new("egress denial", SKIPPED, "named with --skip-smoke");
        assert!(skipped.passed(), "a skip by name lets the install go on");
        assert_eq!(
            skipped.result, "skipped by operator",
            "and says what it was"
        );
        for other in ["failed", "skipped", "unknown"] {
            assert!(
                !Check::new("x", other, "").passed(),
                "{other} must not pass"
            );
        }
    }
}
