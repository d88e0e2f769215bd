//! Evidence a regulator can check (issue #16): the gateway's SIEM egress into a real rsyslog, over
//! TCP and TLS, that never holds a decision back and misses nothing once the SIEM is back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../support/mod.rs"]
mod support;

use support::Gateway;

/// A real rsyslogd on 127.0.0.1, writing what it receives to `out.log`, one line per message:
/// `PRI HOSTNAME APP-NAME MSGID STRUCTURED-DATA MSG`.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    /// Starts on a free port; with TLS, a certificate for `localhost` issued by `ca.pem` in `dir`.
    fn start(dir: &Path, tls: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let d = dir.display();
        let (global_tls, module) = if tls {
            support::make_ca(dir, "server", "DNS:localhost,IP:127.0.0.1");
            (
                format!(
                    "DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\""
                ),
                r#"module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")"#,
            )
        } else {
            (String::new(), r#"module(load="imtcp")"#)
        };
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k" {global_tls})
{module}
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="line" type="string" string="%pri% %hostname% %app-name% %msgid% %structured-data% %msg%\n")
action(type="omfile" file="{d}/out.log" template="line")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Self {
            child: None,
            dir: dir.to_owned(),
            port,
        };
        r.restart();
        r
    }

    /// (Re)starts rsyslogd with the same configuration and port, and waits until it listens.
    fn restart(&mut self) {
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("rsyslog.err"))
                    .unwrap(),
            )
            .spawn()
            .expect("rsyslogd (apt rsyslog rsyslog-gnutls; `cargo xtask test` installs it)");
        self.child = Some(child);
        wait_for("rsyslogd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Stops rsyslogd the way a service manager does (SIGTERM), and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            c.wait().unwrap();
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to a minute: this is a deadline for a stuck test, not a timing assertion) until
/// `ready` holds.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of `name` in a line's structured data.
fn param<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}=\""))? + name.len() + 3;
    let rest = &line[at..];
    Some(&rest[..rest.find('"')?])
}

/// The seqs of the audit messages received, in arrival order.
fn audit_seqs(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l.split(' ').nth(3) == Some("audit"))
        .filter_map(|l| param(l, "seq")?.parse().ok())
        .collect()
}

const POLICY: &str =
    "name: reads\nrules:\n  - name: reads-only\n    effect: allow\n    actions: [\"read:*\"]\n";

fn gateway(dir: &Path, siem_url: &str, extra: &[(&str, std::ffi::OsString)]) -> Gateway {
    let mut env: Vec<(&str, std::ffi::OsString)> = vec![
        ("SIEM_SYSLOG_URL", siem_url.into()),
        ("AUDIT_ORIGIN", "gw1.site.example/meshguard-audit".into()),
        ("RATE_LIMIT_RPM", "0".into()),
        ("POLICIES_DIR", dir.join("policies").into()),
    ];
    env.extend(extra.iter().cloned());
    Gateway::spawn(dir, &env)
}

fn siem_status(gw: &Gateway) -> Value {
    gw.get("/admin/siem")
}

#[test]
fn a_denial_and_its_alert_reach_rsyslog_as_rfc5424_with_structured_data() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(&tmp.path().join("rsyslog"), false);
    let gw = gateway(
        &tmp.path().join("gw"),
        &format!("tcp://127.0.0.1:{}", rs.port),
        &[],
    );
    let (s, body) = gw.admin(
        reqwest::Method::POST,
        "/admin/policies",
        Some(json!({"name": "reads", "content": POLICY})),
    );
    assert_eq!(s, 201, "{body}");
    let token = gw.agent("siem-bot", "verified");
    assert_eq!(gw.check(&token, "read:reports"), 200);
    assert_eq!(gw.check(&token, "write:reports"), 403);
    // A call with a forged token: a bypass attempt, denied, with a critical alert.
    assert_eq!(gw.check("forged.token.value", "read:reports"), 401);

    wait_for("the bypass attempt's alert in rsyslog", || {
        rs.lines()
            .iter()
            .any(|l| l.contains(" alert ") && l.contains("event=\"bypass_attempt\""))
    });
    let lines = rs.lines();
    let deny = lines
        .iter()
        .find(|l| l.contains(" audit ") && l.contains("action=\"write:reports\""))
        .unwrap_or_else(|| panic!("the denial as an audit message: {lines:#?}"));
    // log audit (13) at warning (4); our hostname and app; every field a SIEM filters on.
    assert!(
        deny.starts_with("108 gw1.site.example meshguard audit [meshguard@32473 "),
        "{deny}"
    );
    for (k, v) in [
        ("decision", "deny"),
        ("agentName", "siem-bot"),
        ("rule", ""),
        ("mode", "enforce"),
    ] {
        if !v.is_empty() {
            assert_eq!(param(deny, k), Some(v), "{k} in {deny}");
        }
    }
    // The message is the entry itself, as the log hashed it.
    let json_at = deny.find('{').expect("the entry's JSON");
    let entry: Value = serde_json::from_str(&deny[json_at..]).unwrap();
    assert_eq!(entry["decision"], "deny");
    assert_eq!(param(deny, "id"), entry["id"].as_str());

    let allow = lines
        .iter()
        .find(|l| l.contains(" audit ") && l.contains("action=\"read:reports\""))
        .expect("the allowed call too");
    assert!(
        allow.starts_with("110 "),
        "log audit, informational: {allow}"
    );
    assert_eq!(param(allow, "rule"), Some("reads-only"));

    // The denial's alert (log alert = 14, warning) and the bypass attempt's (critical).
    let alert = lines
        .iter()
        .find(|l| l.contains(" alert ") && param(l, "id") == entry["id"].as_str())
        .expect("the denial's alert");
    assert!(alert.starts_with("116 "), "{alert}");
    let bypass = lines
        .iter()
        .find(|l| l.contains(" alert ") && l.contains("event=\"bypass_attempt\""))
        .unwrap();
    assert!(bypass.starts_with("114 "), "log alert, critical: {bypass}");
    assert_eq!(param(bypass, "severity"), Some("critical"));
    let bypass_audit = lines
        .iter()
        .find(|l| l.contains(" audit ") && param(l, "id") == param(bypass, "id"))
        .expect("the bypass attempt's deny event");
    assert_eq!(param(bypass_audit, "decision"), Some("deny"));
}

#[test]
fn over_tls_nothing_is_missed_while_the_siem_is_down_or_the_gateway_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::start(&tmp.path().join("rsyslog"), true);
    let dir = tmp.path().join("gw");
    let url = format!("tls://localhost:{}", rs.port);
    let ca: std::ffi::OsString = tmp.path().join("rsyslog/ca.pem").into();
    let gw = gateway(&dir, &url, &[("SIEM_CA_FILE", ca.clone())]);
    let token = gw.agent("tls-bot", "verified");
    for _ in 0..5 {
        assert_eq!(gw.check(&token, "write:x"), 403);
    }
    let caught_up = |gw: &Gateway| {
        let s = siem_status(gw);
        s["lag"] == 0 && s["durable"].as_u64() > Some(0)
    };
    wait_for("the SIEM to catch up", || caught_up(&gw));
    assert_eq!(siem_status(&gw)["connected"], true);

    // The SIEM goes down: decisions are still answered, and the forwarder says it is behind.
    rs.stop();
    for _ in 0..20 {
        assert_eq!(gw.check(&token, "write:x"), 403);
    }
    wait_for("the forwarder to notice", || {
        let s = siem_status(&gw);
        s["connected"] == false && s["lag"].as_u64() > Some(0)
    });
    let status = siem_status(&gw);
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains(&rs.port.to_string())),
        "{status}"
    );

    // Back: everything after the cursor arrives.
    rs.restart();
    wait_for("the SIEM to catch up after its restart", || caught_up(&gw));
    let durable = siem_status(&gw)["durable"].as_u64().unwrap();
    let seqs = audit_seqs(&rs.lines());
    for seq in 1..=durable {
        assert!(
            seqs.contains(&seq),
            "seq {seq} never reached the SIEM: {seqs:?}"
        );
    }

    // The gateway dies (kill -9) and starts again: it resumes from its cursor, not from the start.
    drop(gw);
    let cursor: u64 = std::fs::read_to_string(dir.join("siem.cursor"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        cursor > 0 && cursor <= durable,
        "cursor {cursor}, log {durable}"
    );
    let gw = gateway(&dir, &url, &[("SIEM_CA_FILE", ca)]);
    assert_eq!(gw.check(&token, "write:after-restart"), 403);
    wait_for("the decision after the restart", || {
        rs.lines()
            .iter()
            .any(|l| l.contains("action=\"write:after-restart\""))
    });
    let seqs = audit_seqs(&rs.lines());
    let first_seen = seqs.iter().filter(|s| **s == 1).count();
    assert_eq!(
        first_seen, 1,
        "the first entry was sent again after the restart: {seqs:?}"
    );
    let durable = siem_status(&gw)["durable"].as_u64().unwrap();
    for seq in 1..=durable {
        assert!(
            seqs.contains(&seq),
            "seq {seq} never reached the SIEM: {seqs:?}"
        );
    }
}

#[test]
fn a_siem_whose_certificate_is_not_trusted_gets_nothing_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = Rsyslog::start(&tmp.path().join("rsyslog"), true);
    // No SIEM_CA_FILE: the test CA is not among the system's roots.
    let gw = gateway(
        &tmp.path().join("gw"),
        &format!("tls://localhost:{}", rs.port),
        &[],
    );
    let token = gw.agent("untrusting-bot", "verified");
    assert_eq!(gw.check(&token, "write:x"), 403, "decisions go on");
    wait_for("the TLS failure to be reported", || {
        siem_status(&gw)["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("TLS") && e.contains("certificate"))
    });
    assert!(
        audit_seqs(&rs.lines()).is_empty(),
        "an unverified SIEM received entries"
    );
}
