//! The holes of the security review (issue #12), each tried as an attacker would, through the
//! real binary and a real upstream on loopback.

use std::io::{Read, Write};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, LoopDisk, Options, PythonServer, agent, json, policy, tempdir};

const READ_ONLY: &str =
    "name: read-only\nrules:\n  - name: reads\n    effect: allow\n    actions: [\"read:*\"]\n";

const RECEIVER_SECRET: &str = "whsec-security-5d1f3a7c9e";

/// A gateway forwarding to a real upstream, with one policy and one agent.
struct Proxied {
    up: PythonServer,
    gw: Gateway,
    id: String,
    token: String,
    _dir: tempfile::TempDir,
}

fn proxied(name: &str, policy_yaml: &str) -> Proxied {
    let up = PythonServer::start("upstream.py", &[]);
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("PROXY_TARGET", up.url.clone())]),
    );
    policy(&gw, name, policy_yaml);
    let (id, token) = agent(&gw, "reader", "verified", &[]);
    Proxied {
        up,
        gw,
        id,
        token,
        _dir: dir,
    }
}

/// What the upstream has received so far (method and path of every request).
fn upstream_log(up: &PythonServer) -> Vec<(String, String)> {
    let got: Vec<Value> = reqwest::blocking::get(format!("{}/__received", up.url))
        .unwrap()
        .json()
        .unwrap();
    got.iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Sends a request line as written (no client-side path normalization) and returns the status.
fn raw_request(gw: &Gateway, method: &str, target: &str, token: &str) -> u16 {
    let addr = gw.url("").trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[test]
fn a_forwarded_call_is_judged_by_what_it_does_not_by_what_its_headers_claim() {
    let rx = PythonServer::start("receiver.py", &[RECEIVER_SECRET]);
    let p = proxied("read-only", READ_ONLY);
    let (up, gw, id, token) = (&p.up, &p.gw, &p.id, &p.token);
    let (status, _) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": format!("{}/hook", rx.url), "webhookSecret": RECEIVER_SECRET, "triggers": ["deny"], "severity": "critical"}),
    );
    assert_eq!(status, 201);

    // The review's attack: a DELETE that claims to be a read.
    let resp = gw
        .raw(Method::DELETE, "/proxy/admin/x")
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "read:admin/x")
        .header("X-MeshGuard-Trace-ID", "trace-spoof")
        .send()
        .unwrap();
    let (status, body) = json(resp);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "X-MeshGuard-Action");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("read:admin/x") && message.contains("delete:admin/x"),
        "the refusal names what disagrees: {message}"
    );
    // A resource header pointing elsewhere is refused the same way.
    let resp = gw
        .raw(Method::GET, "/proxy/admin/x")
        .bearer_auth(token)
        .header("X-MeshGuard-Resource", "public/readme")
        .send()
        .unwrap();
    assert_eq!(json(resp).0, 400);
    // A path the upstream would resolve to another one (`..`, plain or encoded).
    assert_eq!(
        raw_request(gw, "GET", "/proxy/public/../admin/x", token),
        400
    );
    assert_eq!(
        raw_request(gw, "GET", "/proxy/public/%2e%2e/admin/x", token),
        400
    );
    assert!(
        upstream_log(up).is_empty(),
        "nothing misdescribed may reach the upstream: {:?}",
        upstream_log(up)
    );

    // The spoof is a recorded bypass attempt of this agent, with a critical alert.
    let (_, audit) = gw.get("/admin/audit?traceId=trace-spoof");
    let row = &audit["entries"][0];
    assert_eq!(
        (
            row["event"].as_str(),
            row["decision"].as_str(),
            row["agentId"].as_str(),
            row["action"].as_str(),
            row["method"].as_str(),
        ),
        (
            Some("bypass_attempt"),
            Some("deny"),
            Some(id.as_str()),
            Some("delete:admin/x"),
            Some("DELETE")
        ),
        "{row}"
    );
    let got = rx.received(1);
    let spoof = got
        .iter()
        .find(|d| d["body"]["entry"]["traceId"] == "trace-spoof")
        .unwrap_or_else(|| panic!("a critical alert for the spoofed call: {got:?}"));
    assert_eq!(spoof["body"]["severity"], "critical");
    assert_eq!(spoof["body"]["entry"]["event"], "bypass_attempt");

    // Headers that agree are fine, and may only narrow: the derived action must be allowed too.
    let resp = gw
        .raw(Method::GET, "/proxy/api/repos")
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "read:api/repos/meshguard")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = gw
        .raw(Method::DELETE, "/proxy/api/repos")
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "delete:api/repos/meshguard")
        .send()
        .unwrap();
    assert_eq!(json(resp).0, 403, "a narrower header never widens a deny");
    assert_eq!(
        upstream_log(up),
        vec![("GET".to_owned(), "/api/repos".to_owned())],
        "only the allowed read reached the upstream"
    );
}

#[test]
fn a_narrowing_header_is_evaluated_and_can_deny() {
    let p = proxied(
        "repos",
        "name: repos\nrules:\n  - name: no-secrets\n    effect: deny\n    actions: [\"read:api/repos/*/secrets\"]\n  - name: reads\n    effect: allow\n    actions: [\"read:api/*\"]\n",
    );
    let (up, gw, token) = (&p.up, &p.gw, &p.token);
    let resp = gw
        .raw(Method::GET, "/proxy/api/repos/x")
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "read:api/repos/x/secrets")
        .header("X-MeshGuard-Trace-ID", "trace-narrow")
        .send()
        .unwrap();
    let (status, body) = json(resp);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "no-secrets");
    let row = &gw.get("/admin/audit?traceId=trace-narrow").1["entries"][0];
    assert_eq!(row["action"], "read:api/repos/x");
    assert_eq!(
        row["meta"]["narrowedTo"]["action"],
        "read:api/repos/x/secrets"
    );
    assert!(upstream_log(up).is_empty());
}

#[test]
fn forwarded_calls_keep_the_clients_framing_and_utf8_meta_is_accepted() {
    let p = proxied(
        "all",
        "name: all\nrules:\n  - name: any\n    effect: allow\n    actions: [\"*\"]\n",
    );
    let (gw, token) = (&p.gw, &p.token);
    // A DELETE with no body reaches an upstream that reads by Content-Length with no body and
    // no chunked framing.
    let seen: Value = gw
        .raw(Method::DELETE, "/proxy/api/items/1")
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        seen["headers"].get("transfer-encoding").is_none(),
        "a body-less call is not re-sent chunked: {seen}"
    );
    // A body with a length arrives with that length, whole.
    let seen: Value = gw
        .raw(Method::POST, "/proxy/api/items")
        .bearer_auth(token)
        .body("hello")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(seen["headers"]["content-length"], "5", "{seen}");
    assert!(seen["headers"].get("transfer-encoding").is_none(), "{seen}");
    assert_eq!(seen["bodyLength"], 5);

    // X-MeshGuard-Meta as the Go SDK sends it: raw UTF-8 JSON.
    let resp = gw
        .raw(Method::GET, "/proxy/check")
        .bearer_auth(token)
        .header("X-MeshGuard-Action", "read:x")
        .header("X-MeshGuard-Trace-ID", "trace-utf8")
        .header(
            "X-MeshGuard-Meta",
            reqwest::header::HeaderValue::from_bytes("{\"user\":\"José\"}".as_bytes()).unwrap(),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let row = &gw.get("/admin/audit?traceId=trace-utf8").1["entries"][0];
    assert_eq!(row["meta"]["user"], "José");
}

#[test]
fn health_says_up_or_down_to_anyone_and_the_details_to_the_admin() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, public) = json(gw.raw(Method::GET, "/health").send().unwrap());
    assert_eq!((status, public["status"].as_str()), (200, Some("healthy")));
    for hidden in ["license", "mode", "version", "checks", "uptime"] {
        assert!(
            public.get(hidden).is_none(),
            "{hidden} is not public: {public}"
        );
    }
    let (status, _) = json(
        gw.raw(Method::GET, "/health")
            .header("X-Admin-Token", "not-the-admin-token-at-all")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    let (status, full) = gw.get("/health");
    assert_eq!(status, 200);
    assert_eq!(
        (full["mode"].as_str(), full["checks"]["database"].as_str()),
        (Some("enforce"), Some("ok"))
    );
    assert!(full.get("license").is_some(), "{full}");
}

/// Item 2: one decision, one audit entry, written once with the outcome the caller received.
/// The disk is made slow for real: the audit log's filesystem is frozen (`fsfreeze`). A first
/// decision is sent and the test waits until the thread writing its group is blocked in the
/// kernel on it (`/proc` says so); the decisions sent after that are queued behind a group
/// that cannot be written, and no one takes them, so every one of them misses the (50 ms) budget, is withdrawn and is answered, and
/// recorded, by the breaker. The first is answered as decided once written (or by the breaker,
/// if the writer had not taken it in time). Every trace id has exactly one entry, and it says
/// what the caller was told. Nothing here depends on how fast the machine is: the test waits
/// for the writer's state and the breaker's own log lines, not for a time.
#[test]
fn the_circuit_breaker_answers_what_the_audit_log_records() {
    let dir = tempdir();
    let disk = LoopDisk::new(dir.path(), "remount-ro");
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("CIRCUIT_BREAKER_MS", "50".to_owned()),
            (
                "AUDIT_LOG_DIR",
                disk.mount.join("audit-log").display().to_string(),
            ),
        ]),
    );
    policy(&gw, "read-only", READ_ONLY);
    let (_, token) = agent(&gw, "hurried", "verified", &[]);
    let calls: Vec<(String, &str)> = (0..6)
        .map(|i| {
            let action = if i % 2 == 0 {
                "read:records"
            } else {
                "write:records"
            };
            (format!("breaker-{i}"), action)
        })
        .collect();
    disk.freeze();
    let client = reqwest::blocking::Client::new();
    let call = |(trace, action): &(String, &str)| {
        let (status, body) = json(
            client
                .get(gw.url("/proxy/check"))
                .bearer_auth(&token)
                .header("X-MeshGuard-Action", *action)
                .header("X-Trace-Id", trace.as_str())
                .send()
                .unwrap(),
        );
        (trace.clone(), status, body)
    };
    let answers: Vec<(String, u16, Value)> = std::thread::scope(|s| {
        let first = s.spawn(|| call(&calls[0]));
        gw.wait_until_a_thread_blocks();
        let trips = || gw.log_text().matches("circuit breaker tripped").count();
        let before = trips();
        let behind: Vec<_> = calls[1..]
            .iter()
            .map(|c| s.spawn(move || call(c)))
            .collect();
        // The disk stays "slow" until the breaker has tripped for each call behind the writer
        // (it logs that before its own entry waits on the disk), then recovers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while trips() < before + behind.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the breaker did not trip for every call behind the blocked writer: {}",
                gw.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        disk.thaw();
        std::iter::once(first)
            .chain(behind)
            .map(|h| h.join().unwrap())
            .collect()
    });
    each_answer_is_its_entrys_outcome(&gw, &answers);
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
    a_batch_item_is_answered_as_its_entry_says(&gw, &disk, &token);
}

/// One entry per call, saying what the caller got; every call queued behind the blocked
/// writer was answered by the breaker, closed (enforce), naming the configured budget.
fn each_answer_is_its_entrys_outcome(gw: &Gateway, answers: &[(String, u16, Value)]) {
    for (i, (trace, status, body)) in answers.iter().enumerate() {
        assert!(*status == 200 || *status == 403, "{trace}: {status} {body}");
        let (_, page) = gw.get(&format!("/admin/audit?traceId={trace}&limit=10"));
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{trace}: one entry per decision: {page}");
        let e = &entries[0];
        let told = if *status == 200 { "allow" } else { "deny" };
        assert_eq!(
            e["outcome"], told,
            "{trace}: the entry says what the caller got: {e}"
        );
        let tripped = e["event"] == "circuit_breaker";
        assert!(
            i == 0 || tripped,
            "{trace} was queued behind a blocked writer, so the breaker answers it: {e}"
        );
        if tripped {
            assert_eq!(*status, 403, "enforce mode fails closed: {body}");
            assert!(
                body.to_string()
                    .contains("within the 50 ms circuit breaker"),
                "the answer says why, with the configured budget: {body}"
            );
        }
    }
}

/// A batch in the same conditions: each item's answer is its entry's outcome.
fn a_batch_item_is_answered_as_its_entry_says(gw: &Gateway, disk: &LoopDisk, token: &str) {
    disk.freeze();
    let (status, batch) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            gw.batch(
                token,
                &json!({"actions": [{"action": "read:a"}, {"action": "write:b"}, {"action": "read:c"}]}),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(1500));
        disk.thaw();
        h.join().unwrap()
    });
    assert_eq!(status, 200, "{batch}");
    let trace = batch["traceId"].as_str().unwrap();
    let (_, page) = gw.get(&format!("/admin/audit?traceId={trace}&limit=10"));
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "one entry per item: {page}");
    for item in batch["results"].as_array().unwrap() {
        let e = entries
            .iter()
            .find(|e| e["action"] == item["action"])
            .unwrap_or_else(|| panic!("no entry for {item} in {page}"));
        assert_eq!(e["outcome"], item["decision"], "{item} vs {e}");
    }
}

/// Item 3: a flood of calls without a valid token, or over the rate limit, costs bounded disk.
/// Each kind of refusal gets its own row once per window and one aggregate row for the rest of
/// that window (count, first and last time, sample trace ids); every refusal is accounted for.
#[test]
fn a_flood_of_refused_calls_is_aggregated_and_nothing_is_lost() {
    // Forged tokens (no address limit, so every call reaches the token check).
    let (rows, total, windows, agg) = flood("0", "forged.token.value", "bypass_attempt", 401);
    assert_eq!(
        total, 120,
        "every refusal without a valid token is accounted for"
    );
    assert!(
        rows <= 2 * windows,
        "{rows} rows for 120 refusals over {windows} windows"
    );
    let a = &agg["meta"]["aggregate"];
    assert!(a["count"].as_u64().unwrap() >= 1, "{agg}");
    assert!(!a["sampleTraceIds"].as_array().unwrap().is_empty(), "{agg}");
    assert!(
        a["first"].as_str().unwrap() <= a["last"].as_str().unwrap(),
        "{agg}"
    );
    assert!(
        agg["reason"].as_str().unwrap().contains("more refusal"),
        "{agg}"
    );

    // A valid agent over the address's limit of 5 a minute.
    let (rows, total, windows, _) = flood("5", "", "rate_limit", 429);
    // 115, or fewer if the limiter's minute turned during the flood; flood() has checked
    // that every one answered 429 is accounted for.
    assert!(total >= 100, "the address is over its limit: {total}");
    assert!(
        rows <= 2 * windows,
        "{rows} rows for {total} rate-limited calls"
    );
}

/// Sends 120 checks to a new gateway (`token` empty: a valid agent's); returns the rows of
/// `event`, the refusals they account for, the windows the flood spanned, and an aggregate row.
fn flood(rpm: &str, token: &str, event: &str, refused: u16) -> (u64, u64, u64, Value) {
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("AUDIT_REFUSAL_WINDOW_SECONDS", "2".to_owned()),
            ("RATE_LIMIT_RPM", rpm.to_owned()),
        ]),
    );
    policy(&gw, "read-only", READ_ONLY);
    let (_, valid) = agent(&gw, "flooded", "verified", &[]);
    let token = if token.is_empty() {
        valid.as_str()
    } else {
        token
    };
    let started = std::time::Instant::now();
    let mut count = 0;
    for _ in 0..120 {
        let (status, _) = json(
            gw.raw(Method::GET, "/proxy/check")
                .bearer_auth(token)
                .header("X-MeshGuard-Action", "read:records")
                .send()
                .unwrap(),
        );
        if status == refused {
            count += 1;
        }
    }
    let windows = started.elapsed().as_secs() / 2 + 2;
    // Every refusal shows up: its own row, or counted in an aggregate row (written when the
    // window closes; waited for here, with a generous deadline).
    let accounted = || -> (Vec<Value>, u64) {
        let (_, page) = gw.get("/admin/audit?limit=1000");
        let rows: Vec<Value> = page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect();
        let total = rows
            .iter()
            .map(|e| e["meta"]["aggregate"]["count"].as_u64().unwrap_or(1))
            .sum();
        (rows, total)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while accounted().1 < count && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (rows, total) = accounted();
    assert_eq!(
        total, count,
        "{event}: the refusals answered are the refusals recorded"
    );
    let agg = rows
        .iter()
        .find(|e| e["meta"]["aggregate"].is_object())
        .cloned()
        .unwrap_or(Value::Null);
    let (_, report) = gw.get("/admin/audit/verify");
    assert_eq!(report["valid"], true, "{report}");
    (rows.len() as u64, total, windows, agg)
}

/// Whether the server has closed `s` (a read returns end of file or a reset), waiting up to
/// `within`.
fn closed_within(s: &std::net::TcpStream, within: std::time::Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 512];
    let mut reader = s;
    loop {
        match reader.read(&mut b) {
            Ok(0) => return true,
            // A 408 or 503 answer before the close is fine; keep reading to the end.
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Issue #32 item 5: half-sent request heads are dropped after the header timeout, and one
/// address cannot hold more connections than its cap; the gateway keeps answering others.
#[test]
fn slow_heads_time_out_and_one_address_cannot_hold_every_connection() {
    // The cap, on a gateway whose header timeout is far away: a close here can only be the
    // cap's, however slow the machine (each wait is a deadline, not a measure).
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![
            ("HTTP_HEADER_TIMEOUT_SECONDS", "300".into()),
            ("MAX_CONNECTIONS_PER_CLIENT", "20".into()),
        ]),
    );
    let half_heads = |gw: &Gateway, n: usize| -> Vec<std::net::TcpStream> {
        let addr = gw.url("").trim_start_matches("http://").to_owned();
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
                s
            })
            .collect()
    };
    let mut held = half_heads(&gw, 30);
    let over = held
        .split_off(20)
        .iter()
        .filter(|s| closed_within(s, std::time::Duration::from_secs(30)))
        .count();
    assert_eq!(
        over, 10,
        "the connections over the per-address cap are closed"
    );
    // Those within it stay open (the test's own pooled client may hold one more place).
    let open = held
        .iter()
        .filter(|s| !closed_within(s, std::time::Duration::from_millis(100)))
        .count();
    assert!(open >= 19, "{open} of 20 within the cap are open");
    drop(held);
    assert_eq!(gw.get("/health").0, 200);
    drop(gw);

    // The header timeout, on a gateway with no cap in the way: every half-sent head is dropped.
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("HTTP_HEADER_TIMEOUT_SECONDS", "2".into())]),
    );
    let held = half_heads(&gw, 20);
    let timed_out = held
        .iter()
        .filter(|s| closed_within(s, std::time::Duration::from_secs(60)))
        .count();
    assert_eq!(timed_out, 20, "every half-sent head is dropped");
    drop(held);
    // And the gateway answers as before.
    assert_eq!(gw.get("/health").0, 200);
}

/// Issue #32 item 10: the database (with its WAL and shared memory) and the audit log are the
/// gateway's user's only, whatever the umask.
#[test]
fn the_database_and_the_audit_log_are_private_to_the_gateway() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(&gw, "read-only", READ_ONLY);
    let (_, token) = agent(&gw, "reader", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = dir.path().join("data");
    assert_eq!(mode(&data.join("meshguard.db")), 0o600);
    for side in ["meshguard.db-wal", "meshguard.db-shm"] {
        if data.join(side).exists() {
            assert_eq!(mode(&data.join(side)), 0o600, "{side}");
        }
    }
    assert_eq!(mode(&data.join("audit-log")), 0o700);
    // A file an earlier release left 0644 is tightened at the next start.
    drop(gw);
    std::fs::set_permissions(
        data.join("meshguard.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let gw = Gateway::start(dir.path());
    assert_eq!(mode(&data.join("meshguard.db")), 0o600);
    drop(gw);
}
