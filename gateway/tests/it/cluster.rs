//! Several gateways on one PostgreSQL control plane (a real PostgreSQL 15 started by the test):
//! what one is told, every one enforces; a revoke acts everywhere; neither a gateway's death nor
//! the database's restart loses an answered decision.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{self, Gateway, Options, agent, policy, tempdir};

use meshguard_testkit::{pg, wait_for};

const ALLOW_READS: &str = "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";

/// The key every gateway of the cluster seals alert-channel secrets with, as the chart passes
/// it from a Secret (`SECRETS_KEY`, base64 of 32 bytes).
const SECRETS_KEY: &str = "bWVzaGd1YXJkLWNsdXN0ZXItdGVzdC1rZXktMzJieXQ=";

/// A gateway of the cluster: its own directory (its audit log and index), the shared database
/// and secrets key.
fn member(dir: &Path, url: &str) -> Gateway {
    // Each gateway is a log origin of its own, as the chart names them after their pods.
    let origin = format!(
        "it.cluster/{}",
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
    );
    Gateway::start_with(
        dir,
        Options::with(vec![
            ("DATABASE_URL", url.to_owned()),
            ("SECRETS_KEY", SECRETS_KEY.into()),
            ("AUDIT_ORIGIN", origin),
            ("AUDIT_CHECKPOINT_SECONDS", "1".into()),
            ("CONTROL_PLANE_POLL_MS", "500".into()),
        ]),
    )
}

fn audit_size(gw: &Gateway) -> u64 {
    gw.get("/admin/info").1["auditLog"]["size"]
        .as_u64()
        .unwrap()
}

#[test]
fn what_one_gateway_is_told_every_gateway_enforces_and_a_revoke_acts_on_all() {
    let server = pg::PgServer::start();
    let url = server.database("cluster");
    let (da, db) = (tempdir(), tempdir());
    let a = member(da.path(), &url);
    let b = member(db.path(), &url);
    let info = b.get("/admin/info").1;
    assert_eq!(info["controlPlane"]["backend"], "postgresql", "{info}");
    let (id, token) = what_a_is_told_b_enforces(&a, &b);
    a_channel_secret_sealed_on_a_opens_on_b(&server, &a, &b);
    a_revoke_on_b_acts_on_a(&a, &b, &id, &token);
    // The change log is one, whichever gateway took the write.
    let (_, changes) = a.get("/admin/changes");
    let kinds: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["agent", "policy", "alert_channel", "agent"],
        "{changes}"
    );

    let origins = the_central_index_holds_both_logs(&a, &b, &id);
    a_changed_index_row_is_named_by_origin(&server, &a, &origins.0);
    drop(b);
    an_origin_row_set_back_to_nothing_is_a_problem(&server, &a, &origins.1);
}

/// With B stopped (nothing ships to its origin), its row in the central index set back to "no
/// entries, no checkpoint" while its entries stay: verify names the origin, rather than taking
/// the row's word that it holds nothing.
fn an_origin_row_set_back_to_nothing_is_a_problem(
    server: &pg::PgServer,
    a: &Gateway,
    origin_b: &str,
) {
    let reset = server
        .psql(
            "cluster",
            &format!("UPDATE audit_origins SET size = 0, checkpoint_size = NULL, checkpoint = NULL WHERE origin = '{origin_b}' RETURNING origin"),
        )
        .unwrap();
    assert_eq!(reset.lines().next(), Some(origin_b), "{reset}");
    let v = a.get("/admin/cluster/audit/verify").1;
    let b = v["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["origin"] == origin_b)
        .unwrap_or_else(|| panic!("{origin_b} in {v}"));
    assert_eq!(b["valid"], false, "{v}");
    assert!(
        b["problem"]
            .as_str()
            .unwrap()
            .contains("no signed checkpoint copied yet"),
        "{v}"
    );
}

/// An agent and a policy made through A: B lists them at once and enforces the policy.
/// Returns the agent's id and token.
fn what_a_is_told_b_enforces(a: &Gateway, b: &Gateway) -> (String, String) {
    let (id, token) = agent(&a, "shared", "verified", &[]);
    assert_eq!(b.get(&format!("/admin/agents/{id}")).0, 200);
    assert_eq!(b.check(&token, "read:x").0, 403, "no policy yet");
    policy(&a, "reads", ALLOW_READS);
    wait_for("B enforces the policy A was given", || {
        b.check(&token, "read:x").0 == 200
    });
    assert_eq!(b.check(&token, "write:x").0, 403);
    let (status, body) = b.get("/admin/policies");
    assert_eq!(status, 200);
    assert_eq!(body["policies"].as_array().map(Vec::len), Some(1), "{body}");

    (id, token)
}

/// A channel's secret is sealed with the shared key and opens on the other gateway.
fn a_channel_secret_sealed_on_a_opens_on_b(server: &pg::PgServer, a: &Gateway, b: &Gateway) {
    let (status, ch) = a.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://hooks.example.com/x", "webhookSecret": "whsec-shared-9f"}),
    );
    assert_eq!(status, 201, "{ch}");
    let stored = server
        .psql("cluster", "SELECT body FROM alert_channels")
        .unwrap();
    assert!(
        !stored.contains("whsec-shared-9f"),
        "sealed at rest: {stored}"
    );
    assert_eq!(
        b.get(&format!(
            "/admin/alert-channels/{}",
            ch["id"].as_str().unwrap()
        ))
        .0,
        200
    );
}

/// Revoked through B: A, which has the agent cached from its decisions, refuses it too.
fn a_revoke_on_b_acts_on_a(a: &Gateway, b: &Gateway, id: &str, token: &str) {
    assert_eq!(a.check(&token, "read:x").0, 200);
    assert_eq!(b.delete(&format!("/admin/agents/{id}")).0, 200);
    assert_eq!(
        b.check(&token, "read:x").0,
        401,
        "at once where it was revoked"
    );
    wait_for("A refuses the token B revoked", || {
        a.check(&token, "read:x").0 == 401
    });
    let followed = a.get("/admin/info").1["controlPlane"].clone();
    assert_eq!(followed["listening"], true, "{followed}");
    assert!(
        followed["appliedChange"].as_i64().unwrap() >= 4,
        "{followed}"
    );
}

/// Each gateway audits its own decisions in its own log; the central index holds both logs,
/// every entry, each verified against its origin's signed checkpoint, and lists every decision
/// about the agent from both. Returns the two origins.
fn the_central_index_holds_both_logs(a: &Gateway, b: &Gateway, id: &str) -> (String, String) {
    assert!(audit_size(&a) >= 2 && audit_size(&b) >= 4);
    let origin_a = a.get("/admin/info").1["auditOrigin"]
        .as_str()
        .unwrap()
        .to_owned();
    let origin_b = b.get("/admin/info").1["auditOrigin"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(origin_a, origin_b);
    let (size_a, size_b) = (audit_size(&a), audit_size(&b));
    let settled = || {
        let v = a.get("/admin/cluster/audit/verify").1;
        let held = |origin: &str| {
            v["origins"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["origin"] == origin)
                .map(|o| {
                    (
                        o["entries"].as_u64().unwrap(),
                        o["checkpointSize"].as_u64().unwrap(),
                    )
                })
        };
        v["valid"] == true
            && held(&origin_a) == Some((size_a, size_a))
            && held(&origin_b) == Some((size_b, size_b))
    };
    wait_for(
        "the central index holds and verifies every entry of both logs",
        settled,
    );
    let (status, listed) = b.get(&format!("/admin/cluster/audit?agentId={id}&limit=1000"));
    assert_eq!(status, 200, "{listed}");
    let entries = listed["entries"].as_array().unwrap();
    let from = |origin: &str| entries.iter().filter(|e| e["origin"] == origin).count();
    let local = |gw: &Gateway| {
        gw.get(&format!("/admin/audit?agentId={id}&limit=1000")).1["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    assert!(local(&a) >= 2 && local(&b) >= 2);
    assert_eq!(
        (from(&origin_a), from(&origin_b)),
        (local(&a), local(&b)),
        "every decision about the agent, from both gateways, as each lists its own: {listed}"
    );
    let denied = b
        .get(&format!("/admin/cluster/audit?agentId={id}&decision=deny"))
        .1;
    assert!(
        denied["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["decision"] == "deny"),
        "{denied}"
    );

    (origin_a, origin_b)
}

/// A row changed in the database behind the gateways' backs is caught, and named by origin.
fn a_changed_index_row_is_named_by_origin(server: &pg::PgServer, a: &Gateway, origin_a: &str) {
    let changed = server
        .psql(
            "cluster",
            &format!("UPDATE audit_index SET body = replace(body, '\"decision\":\"allow\"', '\"decision\":\"deny\"') WHERE origin = '{origin_a}' AND seq = 2 RETURNING seq"),
        )
        .unwrap();
    assert!(
        changed.starts_with('2'),
        "the first decision (after the start's configuration entry) was an allow: {changed}"
    );
    let v = a.get("/admin/cluster/audit/verify").1;
    assert_eq!(v["valid"], false, "{v}");
    let bad: Vec<&Value> = v["origins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["valid"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["origin"], origin_a);
    assert!(
        bad[0]["problem"]
            .as_str()
            .unwrap()
            .contains("do not hash to the signed checkpoint"),
        "{v}"
    );
}

/// Gateways started at the same moment with one AUDIT_ORIGIN (each its own log and key): the
/// origin is claimed under the database's write lock, so exactly one runs and every other is
/// refused, whatever the order they reach the database in (they used to read the central index
/// before either had written to it, and could all pass).
#[test]
fn gateways_starting_at_once_with_one_audit_origin_run_one() {
    use std::io::BufRead as _;
    let server = pg::PgServer::start();
    let url = server.database("race");
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempdir()).collect();
    let mut children: Vec<std::process::Child> = dirs
        .iter()
        .map(|d| {
            harness::command(
                d.path(),
                &Options::with(vec![
                    ("DATABASE_URL", url.clone()),
                    ("SECRETS_KEY", SECRETS_KEY.into()),
                    ("AUDIT_ORIGIN", "it.cluster/raced".into()),
                ]),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(d.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap()
        })
        .collect();
    // Each gateway either says it listens (it passed the origin check) or its output ends.
    let listening: Vec<bool> = children
        .iter_mut()
        .map(|c| {
            let out = std::io::BufReader::new(c.stdout.take().unwrap());
            std::thread::spawn(move || {
                out.lines()
                    .map_while(Result::ok)
                    .any(|l| l.starts_with("listening on"))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let refusals: Vec<String> = dirs
        .iter()
        .zip(&listening)
        .filter(|(_, up)| !**up)
        .map(|(d, _)| std::fs::read_to_string(d.path().join("stderr.log")).unwrap())
        .collect();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(
        listening.iter().filter(|up| **up).count(),
        1,
        "exactly one gateway runs under the origin: {refusals:?}"
    );
    for err in &refusals {
        assert!(
            err.contains("it.cluster/raced") && err.contains("its own AUDIT_ORIGIN"),
            "{err}"
        );
    }
}

#[test]
fn a_gateway_reusing_another_gateways_audit_origin_is_refused() {
    let server = pg::PgServer::start();
    let url = server.database("origins");
    let (da, db) = (tempdir(), tempdir());
    let same = |dir: &Path| {
        harness::command(
            dir,
            &Options::with(vec![
                ("DATABASE_URL", url.clone()),
                ("SECRETS_KEY", SECRETS_KEY.into()),
                ("AUDIT_ORIGIN", "it.cluster/same".into()),
            ]),
        )
    };
    let mut first = same(da.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _first = KillOnDrop(&mut first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .psql("origins", "SELECT count(*) FROM audit_origins")
        .is_ok_and(|n| n == "1")
    {
        assert!(
            Instant::now() < deadline,
            "the first gateway never registered its origin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = same(db.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("it.cluster/same") && err.contains("its own AUDIT_ORIGIN"),
        "{err}"
    );
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_gateway_killed_mid_load_loses_no_answered_decision_and_the_others_keep_serving() {
    let server = pg::PgServer::start();
    let url = server.database("killed");
    let (da, db) = (tempdir(), tempdir());
    let a = member(da.path(), &url);
    let b = member(db.path(), &url);
    policy(&a, "reads", ALLOW_READS);
    let (_, token) = agent(&a, "busy", "verified", &[]);
    wait_for("B has the policy", || b.check(&token, "read:x").0 == 200);

    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (answered, stop, url, token) = (
            Arc::clone(&answered),
            Arc::clone(&stop),
            a.url("/proxy/check"),
            token.clone(),
        );
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = client
                    .get(&url)
                    .bearer_auth(&token)
                    .header("X-MeshGuard-Action", "read:load")
                    .send();
                match sent {
                    Ok(r) if r.status() == 200 => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        })
    };
    wait_for("A answers under load", || {
        answered.load(Ordering::SeqCst) >= 50
    });
    a.kill9();
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let answered = answered.load(Ordering::SeqCst);

    assert_eq!(b.check(&token, "read:x").0, 200, "B serves on");
    let (status, _) = b.post("/admin/agents", json!({"name": "after-the-crash"}));
    assert_eq!(status, 201, "the control plane takes writes through B");

    let a = member(da.path(), &url);
    // Every decision A answered before it died (and perhaps one it logged but could not answer).
    assert!(
        audit_size(&a) >= answered,
        "A's log holds {} entries; it answered {answered}",
        audit_size(&a)
    );
    assert_eq!(a.check(&token, "read:x").0, 200);
}

#[test]
fn decisions_go_on_while_postgres_restarts_and_writes_wait_for_it() {
    let mut server = pg::PgServer::start();
    let url = server.database("restart");
    let (da, db) = (tempdir(), tempdir());
    let a = member(da.path(), &url);
    let b = member(db.path(), &url);
    let reads = policy(&a, "reads", ALLOW_READS);
    let (_, token) = agent(&a, "steady", "verified", &[]);
    wait_for("B has the policy", || b.check(&token, "read:x").0 == 200);
    assert_eq!(a.check(&token, "read:x").0, 200);

    server.stop();
    let before = audit_size(&a);
    for _ in 0..20 {
        assert_eq!(a.check(&token, "read:x").0, 200);
        assert_eq!(b.check(&token, "read:x").0, 200);
        assert_eq!(a.check(&token, "write:x").0, 403);
    }
    assert_eq!(
        audit_size(&a),
        before + 40,
        "every decision audited locally"
    );
    let (status, body) = a.post("/admin/agents", json!({"name": "while-down"}));
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    assert!(!body.to_string().contains(pg::PASSWORD));
    let (status, _) = b.put(
        &format!("/admin/policies/{reads}"),
        json!({"name": "reads", "content": "name: reads\nrules: []\n"}),
    );
    assert_eq!(status, 503, "no write while the database is down");
    assert_eq!(
        b.check(&token, "read:x").0,
        200,
        "the refused write changed nothing"
    );

    server.launch();
    let (status, body) = a.post("/admin/agents", json!({"name": "after-restart"}));
    assert_eq!(status, 201, "{body}");
    let token2 = body["token"].as_str().unwrap().to_owned();
    assert_eq!(b.check(&token2, "read:x").0, 200, "B reads the new agent");
    // B's follower found the database again: a revoke through A reaches it.
    assert_eq!(
        a.delete(&format!("/admin/agents/{}", body["id"].as_str().unwrap()))
            .0,
        200
    );
    wait_for("B refuses the agent revoked after the restart", || {
        b.check(&token2, "read:x").0 == 401
    });
    // The central index caught up with what A decided while the database was down.
    let origin_a = a.get("/admin/info").1["auditOrigin"]
        .as_str()
        .unwrap()
        .to_owned();
    let size_a = audit_size(&a);
    wait_for("the central index holds every entry A logged", || {
        let v = b.get("/admin/cluster/audit/verify").1;
        v["valid"] == true
            && v["origins"].as_array().unwrap().iter().any(|o| {
                o["origin"] == origin_a.as_str()
                    && o["entries"].as_u64() == Some(size_a)
                    && o["checkpointSize"].as_u64() == Some(size_a)
            })
    });
}

/// A TCP relay between a gateway and PostgreSQL that, when armed, passes the COMMIT of the
/// next transaction that wrote a change record to the server, lets the server commit it, and
/// cuts the connection before the reply comes back: the lost COMMIT reply a real network
/// produces now and then, on demand (a fault a real PostgreSQL cannot be asked for).
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    cut: Arc<AtomicU64>,
}

impl CommitCutter {
    fn start(pg_port: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicU64::new(0));
        let (a, c) = (Arc::clone(&armed), Arc::clone(&cut));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = std::net::TcpStream::connect(("127.0.0.1", pg_port)).unwrap();
                let (a, c) = (Arc::clone(&a), Arc::clone(&c));
                std::thread::spawn(move || relay(client, server, &a, &c));
            }
        });
        Self { port, armed, cut }
    }
}

fn relay(
    mut client: std::net::TcpStream,
    mut server: std::net::TcpStream,
    armed: &AtomicBool,
    cut: &AtomicU64,
) {
    use std::io::{Read, Write};
    let (mut back_from, mut back_to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(std::net::Shutdown::Both);
    });
    // The startup message has no type byte (the URL asks for no TLS, so it comes first).
    let mut len = [0u8; 4];
    if client.read_exact(&mut len).is_err() {
        return;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
    if client.read_exact(&mut body).is_err() {
        return;
    }
    let _ = server
        .write_all(&len)
        .and_then(|()| server.write_all(&body));
    let mut wrote_change = false;
    loop {
        let mut head = [0u8; 5];
        if client.read_exact(&mut head).is_err() {
            break;
        }
        let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4;
        let mut body = vec![0u8; n];
        if client.read_exact(&mut body).is_err() {
            break;
        }
        let text = String::from_utf8_lossy(&body);
        if head[0] == b'P' && text.contains("INSERT INTO changes") {
            wrote_change = true;
        }
        let commit = head[0] == b'Q' && text.contains("COMMIT");
        if server
            .write_all(&head)
            .and_then(|()| server.write_all(&body))
            .is_err()
        {
            break;
        }
        if commit && wrote_change && armed.swap(false, Ordering::SeqCst) {
            // The server has the COMMIT; the gateway's side goes at once, so its answer never
            // arrives, and the server's side once it has had time to commit.
            cut.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(std::net::Shutdown::Both);
            std::thread::sleep(Duration::from_millis(300));
            let _ = server.shutdown(std::net::Shutdown::Both);
            break;
        }
        if commit {
            wrote_change = false;
        }
    }
}

/// Issue #32 item 9: a create whose COMMIT reply is lost is answered 503 with outcome
/// `unknown` (it was committed), and the same create sent again with its Idempotency-Key
/// answers the agent the first made: one agent, never two.
#[test]
fn a_lost_commit_reply_is_an_unknown_outcome_and_a_retry_with_its_key_makes_no_duplicate() {
    let server = pg::PgServer::start();
    server.database("lostcommit");
    let cutter = CommitCutter::start(server.port);
    let url = format!(
        "postgresql://{}:{}@127.0.0.1:{}/lostcommit?sslmode=disable",
        pg::USER,
        pg::PASSWORD,
        cutter.port
    );
    let dir = tempdir();
    let gw = member(dir.path(), &url);
    let create = || {
        harness::json(
            gw.admin(reqwest::Method::POST, "/admin/agents")
                .header("Idempotency-Key", "terraform-test-key-1")
                .json(&json!({"name": "exactly-once"}))
                .send()
                .unwrap(),
        )
    };
    cutter.armed.store(true, Ordering::SeqCst);
    let (status, body) = create();
    assert_eq!(
        cutter.cut.load(Ordering::SeqCst),
        1,
        "the COMMIT reply was cut"
    );
    assert_eq!(
        (status, body["error"].as_str(), body["outcome"].as_str()),
        (503, Some("outcome_unknown"), Some("unknown")),
        "{body}"
    );
    let (status, again) = create();
    assert_eq!(status, 201, "{again}");
    let (_, list) = gw.get("/admin/agents");
    let named: Vec<&Value> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "exactly-once")
        .collect();
    assert_eq!(named.len(), 1, "one agent, not two: {list}");
    assert_eq!(named[0]["id"], again["id"]);
    // The token the retry answers works.
    let token = again["token"].as_str().unwrap();
    let (status, _) = gw.check(token, "read:x");
    assert_eq!(
        status, 403,
        "a valid token, denied only for want of a policy"
    );
}

/// A gateway alone on SQLite (`cluster::Standalone`) has no central audit index: both of its
/// routes answer 404 `no_shared_control_plane`, before the query is checked, and `/admin/info`
/// shows the SQLite backend with nothing followed.
#[test]
fn a_gateway_alone_has_no_central_audit_index() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    for path in [
        "/admin/cluster/audit",
        "/admin/cluster/audit?decision=maybe",
        "/admin/cluster/audit/verify",
        "/api/v1/admin/cluster/audit",
    ] {
        let (status, body) = gw.get(path);
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("no_shared_control_plane")),
            "{path}: {body}"
        );
    }
    let info = gw.get("/admin/info").1;
    assert_eq!(
        info["controlPlane"],
        json!({"backend": "sqlite", "appliedChange": 0, "listening": false, "lastLagMs": 0}),
        "{info}"
    );
}
