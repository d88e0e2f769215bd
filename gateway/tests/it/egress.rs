//! The egress proxy (issue #13 part 3) against real peers: Python upstreams on loopback, the
//! stock `minisign` signing the allowlists, a recording receiver for the alerts. Allowed
//! destinations are tunnelled (CONNECT) and forwarded (absolute-form HTTP); others, and
//! destinations outside the pinned region, are refused, audited and alerted; allowlist updates
//! are taken only when signed and newer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Gateway, Options, PythonServer, minisign, tempdir};
use meshguard_testkit::wait_for;

/// Writes the allowlist `doc` to `dir/egress.json`, signed with `key` (None: unsigned).
fn allowlist(dir: &Path, doc: &Value, key: Option<&str>) {
    let _ = std::fs::remove_file(dir.join("egress.json.minisig"));
    std::fs::write(dir.join("egress.json.new"), doc.to_string()).unwrap();
    if let Some(key) = key {
        minisign(&["-S", "-s", key, "-m", "egress.json.new"], dir);
        std::fs::rename(
            dir.join("egress.json.new.minisig"),
            dir.join("egress.json.minisig"),
        )
        .unwrap();
    }
    std::fs::rename(dir.join("egress.json.new"), dir.join("egress.json")).unwrap();
}

fn doc(version: u64, destinations: Value) -> Value {
    json!({"format": "meshguard-egress-allowlist/v1", "version": version, "destinations": destinations})
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// CONNECT through the proxy, then a GET through the tunnel; the proxy's status, and the
/// upstream's when tunnelled.
fn connect(proxy: u16, host: &str, port: u16) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 200 {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        return (status, rest);
    }
    write!(
        s,
        "GET /through-the-tunnel HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    (status, rest)
}

#[test]
fn the_egress_proxy_lets_through_only_the_signed_allowlist_in_the_pinned_region() {
    let dir = tempdir();
    let d = dir.path();
    minisign(&["-G", "-W", "-p", "media.pub", "-s", "media.key"], d);
    minisign(&["-G", "-W", "-p", "other.pub", "-s", "other.key"], d);
    let up = PythonServer::start("upstream.py", &[]);
    let second = PythonServer::start("upstream.py", &[]);
    let rx = PythonServer::start("receiver.py", &[]);
    let (up_port, second_port) = (port_of(&up.url), port_of(&second.url));
    allowlist(
        d,
        &doc(
            1,
            json!([
                {"host": "127.0.0.1", "ports": [up_port], "region": "eu-west"},
                {"host": "localhost", "ports": [up_port], "region": "us-east"},
            ]),
        ),
        Some("media.key"),
    );
    let gw = Gateway::start_with(
        d,
        Options::with(vec![
            ("EGRESS_PROXY_PORT", "0".into()),
            (
                "EGRESS_ALLOWLIST",
                d.join("egress.json").display().to_string(),
            ),
            (
                "EGRESS_ALLOWLIST_PUBKEY",
                d.join("media.pub").display().to_string(),
            ),
            ("EGRESS_REGIONS", "eu-west".into()),
            ("POLICIES_RELOAD_SECONDS", "1".into()),
            ("ALERT_WEBHOOK_URL", format!("{}/alerts", rx.url)),
            ("ALERT_ON", "deny,error".into()),
            ("ALERT_RATE_LIMIT", "100".into()),
        ]),
    );
    let proxy = proxy_port(&gw);
    let upstreams = Upstreams {
        up: &up,
        second: &second,
    };
    only_listed_destinations_in_the_region_pass(proxy, &upstreams);
    every_connection_is_audited_and_every_denial_alerted(&gw, &rx, up_port, second_port);
    let v2 = a_newer_signed_list_is_taken_and_no_other(d, proxy, &rx, up_port, second_port);
    let (_, health) = gw.get("/health");
    assert_eq!(health["status"], "healthy");
    the_settings_in_force_are_in_the_signed_log(&gw, &v2);
}

/// The allowlisted upstream (`127.0.0.1`, and as `localhost` in another region) and a second
/// upstream that version 1 of the list does not name.
struct Upstreams<'a> {
    up: &'a PythonServer,
    second: &'a PythonServer,
}

/// Allowed: tunnelled (CONNECT) and forwarded (absolute form, as reqwest sends plain HTTP).
/// Not listed, and listed but outside the pinned region: refused, saying why.
fn only_listed_destinations_in_the_region_pass(proxy: u16, upstreams: &Upstreams<'_>) {
    let Upstreams { up, second } = upstreams;
    let (up_port, second_port) = (port_of(&up.url), port_of(&second.url));
    let (status, body) = connect(proxy, "127.0.0.1", up_port);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    let client = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{proxy}")).unwrap())
        .build()
        .unwrap();
    let r = client.get(format!("{}/forwarded", up.url)).send().unwrap();
    assert_eq!(r.status(), 200);

    let (status, why) = connect(proxy, "127.0.0.1", second_port);
    assert_eq!(status, 403);
    assert!(why.contains("not on the egress allowlist"), "{why}");
    let (status, why) = connect(proxy, "localhost", up_port);
    assert_eq!(status, 403);
    assert!(why.contains("outside this site's pinned regions"), "{why}");
    assert_eq!(
        client
            .get(format!("{}/x", second.url))
            .send()
            .unwrap()
            .status(),
        403
    );
}

/// Every connection is audited; every denial alerted like a policy deny.
fn every_connection_is_audited_and_every_denial_alerted(
    gw: &Gateway,
    rx: &PythonServer,
    up_port: u16,
    second_port: u16,
) {
    let (_, page) = gw.get("/admin/audit?limit=50");
    let events: Vec<(String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        events.contains(&("egress".into(), format!("127.0.0.1:{up_port}"))),
        "{events:?}"
    );
    assert!(
        events.contains(&("egress_denied".into(), format!("127.0.0.1:{second_port}"))),
        "{events:?}"
    );
    assert!(
        events.contains(&("egress_denied".into(), format!("localhost:{up_port}"))),
        "{events:?}"
    );
    let alerts = rx.received(3);
    assert!(
        alerts
            .iter()
            .filter(|a| a.to_string().contains("Egress Denied"))
            .count()
            >= 3,
        "{alerts:?}"
    );
}

/// A newer signed list is taken without a restart; an older one, an unsigned one and one
/// signed by another key are refused, alerted, and version 2 stays. Returns version 2.
fn a_newer_signed_list_is_taken_and_no_other(
    d: &Path,
    proxy: u16,
    rx: &PythonServer,
    up_port: u16,
    second_port: u16,
) -> Value {
    let v2 = doc(
        2,
        json!([
            {"host": "127.0.0.1", "ports": [up_port, second_port], "region": "eu-west"},
        ]),
    );
    allowlist(d, &v2, Some("media.key"));
    wait_for("the newer allowlist is taken", || {
        connect(proxy, "127.0.0.1", second_port).0 == 200
    });
    for (n, (version, key)) in [(1, Some("media.key")), (3, None), (4, Some("other.key"))]
        .into_iter()
        .enumerate()
    {
        allowlist(d, &doc(version, json!([])), key);
        wait_for("the refusal is alerted", || {
            rx.received(0)
                .iter()
                .filter(|a| a.to_string().contains("Egress Allowlist Refused"))
                .count()
                > n
        });
        assert_eq!(
            connect(proxy, "127.0.0.1", second_port).0,
            200,
            "version {version} ({key:?}) must not replace version 2"
        );
    }
    v2
}

/// The settings in force are in the signed log: at start, and when version 2 was taken
/// (never for the refused ones), naming the signed file by its digest. Evidence reads the
/// egress control from these entries. Allowed transfers name the destination's region.
fn the_settings_in_force_are_in_the_signed_log(gw: &Gateway, v2: &Value) {
    let (_, page) = gw.get("/admin/audit?limit=1000");
    let configs: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "configuration")
        .rev()
        .collect();
    let seen: Vec<(Option<&str>, Option<u64>)> = configs
        .iter()
        .map(|e| {
            (
                e["meta"]["why"].as_str(),
                e["meta"]["egressAllowlist"]["version"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Some("start"), Some(1)),
            (Some("egress allowlist updated"), Some(2))
        ],
        "{configs:?}"
    );
    let last = &configs[1]["meta"];
    assert_eq!(
        (
            last["egressProxy"].as_bool(),
            last["egressRegions"].clone(),
            last["egressAllowlist"]["signed"].as_bool()
        ),
        (Some(true), json!(["eu-west"]), Some(true)),
        "{last}"
    );
    let v2_digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(v2.to_string()))
    };
    assert_eq!(
        last["egressAllowlist"]["sha256"].as_str(),
        Some(v2_digest.as_str()),
        "the entry names the signed file in force by its digest"
    );
    let regions: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "egress")
        .filter_map(|e| e["meta"]["region"].as_str())
        .collect();
    assert!(
        !regions.is_empty() && regions.iter().all(|r| *r == "eu-west"),
        "{regions:?}"
    );
}

/// The gateway's options for an egress proxy on `d/egress.json`, signed by `d/media.pub`.
fn egress_options(d: &Path) -> Options<'static> {
    Options::with(vec![
        ("EGRESS_PROXY_PORT", "0".into()),
        (
            "EGRESS_ALLOWLIST",
            d.join("egress.json").display().to_string(),
        ),
        (
            "EGRESS_ALLOWLIST_PUBKEY",
            d.join("media.pub").display().to_string(),
        ),
        ("POLICIES_RELOAD_SECONDS", "1".into()),
    ])
}

fn proxy_port(gw: &Gateway) -> u16 {
    gw.stdout_lines
        .iter()
        .find_map(|l| l.strip_prefix("egress proxy listening on http://"))
        .expect("the gateway prints the egress proxy's address")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn received(up: &PythonServer) -> usize {
    reqwest::blocking::get(format!("{}/__received", up.url))
        .unwrap()
        .json::<Vec<Value>>()
        .unwrap()
        .len()
}

/// Starts the gateway on `d` expecting it to refuse; returns what it said. A gateway that
/// starts after all is stopped and the test fails, rather than waiting on it forever.
fn refused_start(d: &Path) -> String {
    crate::harness::refused_start(d, &egress_options(d))
}

/// Issue #32 item 7: every request on a connection is judged and audited (a pipelined second
/// request to an unlisted host is refused), the highest allowlist version is kept across a
/// restart (an older signed list is refused at start), and a list past its `expiresAt` allows
/// nothing.
#[test]
fn every_request_is_judged_versions_never_go_back_and_lists_expire() {
    let dir = tempdir();
    let d = dir.path();
    minisign(&["-G", "-W", "-p", "media.pub", "-s", "media.key"], d);
    let up = PythonServer::start("upstream.py", &[]);
    let other = PythonServer::start("upstream.py", &[]);
    let (up_port, other_port) = (port_of(&up.url), port_of(&other.url));
    let listed = json!([{"host": "127.0.0.1", "ports": [up_port]}]);
    allowlist(d, &doc(2, listed.clone()), Some("media.key"));
    let gw = Gateway::start_with(d, egress_options(d));
    let proxy = proxy_port(&gw);

    // Two requests in one write on one connection: the listed one, then an unlisted one.
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET http://127.0.0.1:{up_port}/first HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\nGET http://127.0.0.1:{other_port}/second HTTP/1.1\r\nHost: 127.0.0.1:{other_port}\r\n\r\n"
    )
    .unwrap();
    let mut answers = String::new();
    let _ = s.read_to_string(&mut answers);
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answers[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "403"], "{answers}");
    assert_eq!(received(&up), 1);
    assert_eq!(received(&other), 0, "the pipelined request never left");
    let (_, page) = gw.get("/admin/audit?limit=10");
    let denied = page["entries"].as_array().unwrap().iter().any(|e| {
        e["event"] == "egress_denied" && e["resource"] == format!("127.0.0.1:{other_port}")
    });
    assert!(denied, "{page}");
    drop(gw);

    // An older signed list put in place while the gateway was down: refused at start.
    allowlist(d, &doc(1, listed.clone()), Some("media.key"));
    let why = refused_start(d);
    assert!(
        why.contains("older than version 2 this gateway has already enforced"),
        "{why}"
    );

    // Expired lists: refused at start, and a list that expires while in force allows nothing.
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let mut expired = doc(3, listed.clone());
    expired["expiresAt"] = json!(past);
    allowlist(d, &expired, Some("media.key"));
    assert!(refused_start(d).contains("expired at"));
    // A list that expires a while after the start: allowed before, refused after. If the
    // machine is so slow that the first call lands after the expiry, the step is run again
    // with a longer lead (a newer version each time), so the outcome never depends on load.
    let mut lead = 10;
    let mut version = 4;
    let (client, soon, _gw) = loop {
        let soon = chrono::Utc::now() + chrono::Duration::seconds(lead);
        let mut expiring = doc(version, listed.clone());
        expiring["expiresAt"] = json!(soon.to_rfc3339());
        allowlist(d, &expiring, Some("media.key"));
        let gw = Gateway::start_with(d, egress_options(d));
        let proxy = proxy_port(&gw);
        let client = reqwest::blocking::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{proxy}")).unwrap())
            .build()
            .unwrap();
        let status = client
            .get(format!("{}/before", up.url))
            .send()
            .unwrap()
            .status();
        if chrono::Utc::now() < soon {
            assert_eq!(status, 200, "before the list's expiry");
            break (client, soon, gw);
        }
        assert!(lead < 300, "the machine never answered within {lead} s");
        (lead, version) = (lead * 2, version + 1);
    };
    while chrono::Utc::now() <= soon {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = client.get(format!("{}/after", up.url)).send().unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("expired at"));
}
