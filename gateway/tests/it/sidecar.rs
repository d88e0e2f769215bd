//! The guardian sidecar (issue #13 part 2): the gateway binary run for one agent with the
//! control plane's signed bundle, answering the Guardian contract and the data plane without
//! tokens, forwarding to a real upstream (Python's http.server), and sending its own signed log
//! to the control plane in heartbeats. The control plane takes a sidecar's entries only under
//! the key its first heartbeat registered, and a revocation reaches the sidecar.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, Options, PythonServer, agent, json as parse, policy, tempdir};

const READS: &str =
    "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n";

/// The control plane's signed bundle and key, written as the media carries them.
fn bundle_files(control: &Gateway, dir: &Path) -> (String, String, u64) {
    let (status, env) = control.get("/admin/policies/bundle");
    assert_eq!(status, 200, "{env}");
    let (bundle, key) = (dir.join("policy-bundle.json"), dir.join("bundle.pub"));
    std::fs::write(&bundle, env["bundle"].as_str().unwrap()).unwrap();
    std::fs::write(
        dir.join("policy-bundle.json.minisig"),
        env["minisig"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(&key, env["publicKey"].as_str().unwrap()).unwrap();
    let version =
        serde_json::from_str::<Value>(env["bundle"].as_str().unwrap()).unwrap()["version"]
            .as_u64()
            .unwrap();
    (
        bundle.display().to_string(),
        key.display().to_string(),
        version,
    )
}

/// A sidecar's settings: no admin token, no JWT secret; only what a sidecar is given.
fn sidecar_options<'a>(
    agent_id: &str,
    bundle: &(String, String, u64),
    control: &Gateway,
    token_file: &Path,
    cache: &Path,
    extra: Vec<(&'a str, String)>,
) -> Options<'a> {
    let mut env = vec![
        ("SIDECAR_AGENT_ID", agent_id.to_owned()),
        ("POLICY_BUNDLE", bundle.0.clone()),
        ("POLICY_BUNDLE_PUBKEY", bundle.1.clone()),
        ("GATEWAY_URL", control.base.clone()),
        ("SIDECAR_AGENT_TOKEN_FILE", token_file.display().to_string()),
        ("CACHE_DIR", cache.display().to_string()),
        ("BUNDLE_SYNC_INTERVAL", "1".into()),
    ];
    env.extend(extra);
    Options {
        env,
        args: Vec::new(),
        program: None,
    }
}

fn enforce(sidecar: &Gateway, body: Value) -> (u16, Value) {
    parse(
        sidecar
            .raw(Method::POST, "/enforce")
            .json(&body)
            .send()
            .unwrap(),
    )
}

/// Polls `f` until it returns Some, for up to 30 s (heartbeats run every second).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sidecar_row(control: &Gateway, agent_id: &str) -> Option<Value> {
    let (status, body) = control.get("/admin/sidecars");
    assert_eq!(status, 200, "{body}");
    body["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["agentId"] == agent_id)
        .cloned()
}

#[test]
fn a_sidecar_enforces_the_signed_bundle_for_its_agent_and_its_log_reaches_the_control_plane() {
    let control_dir = tempdir();
    let control = Gateway::start(control_dir.path());
    policy(&control, "reads", READS);
    let (agent_id, token) = agent(&control, "edge-worker", "verified", &[]);
    let pod = tempdir();
    let bundle = bundle_files(&control, pod.path());
    let token_file = pod.path().join("agent.token");
    std::fs::write(&token_file, &token).unwrap();
    let upstream = PythonServer::start("upstream.py", &[]);
    let sidecar = Gateway::start_with(
        pod.path(),
        sidecar_options(
            &agent_id,
            &bundle,
            &control,
            &token_file,
            &pod.path().join("cache"),
            vec![("PROXY_TARGET", upstream.url.clone())],
        ),
    );

    the_guardian_contract_is_decided_by_the_bundle(&sidecar, &agent_id, bundle.2);
    the_data_plane_needs_no_token_and_has_no_admin_api(&sidecar, &upstream);
    heartbeats_bring_the_whole_log_to_the_control_plane(&control, &sidecar, &agent_id, bundle.2);
    // A policy changed on the control plane shows the sidecar's bundle as behind.
    policy(
        &control,
        "writes",
        "name: writes\nrules:\n  - name: allow-write\n    effect: allow\n    actions: [\"write:*\"]\n",
    );
    eventually("the control plane sees the sidecar behind", || {
        sidecar_row(&control, &agent_id).filter(|r| r["policiesCurrent"] == false)
    });

    // Revoking the agent on the control plane shuts its sidecar.
    let (status, body) = control.delete(&format!("/admin/agents/{agent_id}"));
    assert!(status < 300, "{body}");
    eventually("the sidecar learns the revocation", || {
        let (_, h) = sidecar.get("/health");
        (h["revoked"] == true).then_some(())
    });
    let (status, after) = enforce(&sidecar, json!({"action": "read:reports"}));
    assert_eq!(status, 401, "{after}");
    let refused = sidecar
        .raw(Method::GET, "/proxy/check")
        .header("X-MeshGuard-Action", "read:inbox")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
}

/// The Guardian contract (`/enforce`, `/enforce/batch`), decided by the bundle's policy of
/// `version`; another agent's id is not this sidecar's business.
fn the_guardian_contract_is_decided_by_the_bundle(sidecar: &Gateway, agent_id: &str, version: u64) {
    let (status, allowed) = enforce(
        &sidecar,
        json!({"agentId": agent_id, "action": "read:reports"}),
    );
    assert_eq!(status, 200, "{allowed}");
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["policy"], "reads", "{allowed}");
    assert_eq!(allowed["bundleVersion"], version, "{allowed}");
    assert_eq!(allowed["mode"], "enforce", "{allowed}");
    let (status, denied) = enforce(
        &sidecar,
        json!({"agentId": agent_id, "action": "delete:reports"}),
    );
    assert_eq!(status, 200, "{denied}");
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert!(
        denied["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{denied}"
    );
    // Another agent's id is not this sidecar's business.
    let (status, other) = enforce(
        &sidecar,
        json!({"agentId": "agent_someone_else", "action": "read:x"}),
    );
    assert_eq!(status, 400, "{other}");
    assert!(
        other["message"].as_str().unwrap().contains(&agent_id),
        "{other}"
    );
    let (status, batch) = parse(
        sidecar
            .raw(Method::POST, "/enforce/batch")
            .json(&json!({"agentId": agent_id, "actions": [{"action": "read:a"}, {"action": "write:b"}]}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["allAllowed"], false, "{batch}");
    assert_eq!(batch["results"][0]["decision"], "allow", "{batch}");
    assert_eq!(batch["results"][1]["decision"], "deny", "{batch}");
}

/// The data plane, as the agent's SDK calls it, with no token: the pod is the identity; the
/// upstream sees the allowed call only, and a sidecar serves no admin API.
fn the_data_plane_needs_no_token_and_has_no_admin_api(sidecar: &Gateway, upstream: &PythonServer) {
    let (status, check) = parse(
        sidecar
            .raw(Method::GET, "/proxy/check")
            .header("X-MeshGuard-Action", "read:inbox")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{check}");
    let through = sidecar.raw(Method::GET, "/proxy/reports/7").send().unwrap();
    assert_eq!(through.status(), 200);
    let refused = sidecar
        .raw(Method::DELETE, "/proxy/reports/7")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let got: Value = reqwest::blocking::get(format!("{}/__received", upstream.url))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        got,
        json!([{"method": "GET", "path": "/reports/7"}]),
        "the upstream saw the allowed call only"
    );
    // No admin API on a sidecar.
    let admin = sidecar
        .raw(Method::GET, "/admin/agents")
        .header("X-Admin-Token", crate::harness::ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(admin.status(), 404);
}

/// Heartbeats register the sidecar and bring its whole log to the control plane, which
/// verifies it.
fn heartbeats_bring_the_whole_log_to_the_control_plane(
    control: &Gateway,
    sidecar: &Gateway,
    agent_id: &str,
    version: u64,
) {
    let (_, health) = sidecar.get("/health");
    let origin = health["origin"].as_str().unwrap().to_owned();
    assert!(
        origin.starts_with(&format!("meshguard-sidecar/{agent_id}/")),
        "{health}"
    );
    let row = eventually("the control plane holds the sidecar's 7 decisions", || {
        sidecar_row(control, agent_id).filter(|r| r["entriesHeld"].as_u64() >= Some(7))
    });
    assert_eq!(row["origin"], origin.as_str(), "{row}");
    assert_eq!(row["bundleVersion"], version, "{row}");
    assert_eq!(row["policiesCurrent"], true, "{row}");
    let exported = control.get_text(&format!("/admin/audit/export?source={origin}"));
    let lines: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, row["entriesHeld"].as_u64().unwrap());
    let actions: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["entry"]["action"].as_str())
        .collect();
    for a in ["read:reports", "delete:reports", "read:inbox"] {
        assert!(
            actions.contains(&a),
            "{a} reached the control plane: {actions:?}"
        );
    }
    let (status, verified) = control.get("/admin/audit/verify");
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["valid"], true, "{verified}");
}

#[test]
fn the_control_plane_takes_a_sidecars_log_only_under_the_key_and_agent_it_registered() {
    let control_dir = tempdir();
    let control = Gateway::start(control_dir.path());
    policy(&control, "reads", READS);
    let (first_id, first_token) = agent(&control, "first", "verified", &[]);
    let (second_id, second_token) = agent(&control, "second", "verified", &[]);
    let pod = tempdir();
    let bundle = bundle_files(&control, pod.path());
    let first_token_file = pod.path().join("first.token");
    std::fs::write(&first_token_file, &first_token).unwrap();
    let second_token_file = pod.path().join("second.token");
    std::fs::write(&second_token_file, &second_token).unwrap();

    let a_dir = tempdir();
    let a = Gateway::start_with(
        a_dir.path(),
        sidecar_options(
            &first_id,
            &bundle,
            &control,
            &first_token_file,
            &a_dir.path().join("cache"),
            vec![],
        ),
    );
    assert_eq!(
        enforce(&a, json!({"action": "read:x"})).1["decision"],
        "allow"
    );
    let registered = eventually("the first sidecar registers", || {
        sidecar_row(&control, &first_id).filter(|r| r["entriesHeld"].as_u64() >= Some(1))
    });
    drop(a);

    let first = Claim {
        control: &control,
        bundle: &bundle,
        agent_id: &first_id,
        token_file: &first_token_file,
    };
    a_sidecar_with_another_key_under_its_origin_is_refused(&first, a_dir.path());
    let second = Claim {
        control: &control,
        bundle: &bundle,
        agent_id: &second_id,
        token_file: &second_token_file,
    };
    its_state_run_for_another_agent_is_refused(&second, a_dir.path(), &first_id);
    let still = sidecar_row(&control, &first_id).unwrap();
    assert_eq!(
        still["vkey"], registered["vkey"],
        "the registered key is unchanged"
    );
    assert!(sidecar_row(&control, &second_id).is_none());

    // A heartbeat without a checkpoint signed by the sidecar's key is refused.
    let (status, body) = parse(
        control
            .raw(Method::POST, "/api/v1/sidecars/heartbeat")
            .bearer_auth(&first_token)
            .json(&json!({"origin": registered["origin"], "vkey": registered["vkey"], "lines": []}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("checkpoint"),
        "{body}"
    );
}

/// A sidecar run against the control plane: for which agent, with which token and bundle.
struct Claim<'a> {
    control: &'a Gateway,
    bundle: &'a (String, String, u64),
    agent_id: &'a str,
    token_file: &'a Path,
}

impl Claim<'_> {
    /// Starts the sidecar in `dir` (its cache in `dir/cache`) and returns the error its
    /// heartbeat reports, once it has one.
    fn heartbeat_error(&self, dir: &Path, what: &str) -> String {
        let sidecar = Gateway::start_with(
            dir,
            sidecar_options(
                self.agent_id,
                self.bundle,
                self.control,
                self.token_file,
                &dir.join("cache"),
                vec![],
            ),
        );
        eventually(what, || {
            let (_, h) = sidecar.get("/health");
            h["heartbeat"]["lastError"].as_str().map(str::to_owned)
        })
    }
}

/// A second sidecar claiming the first one's origin (copied from `first_dir`) with a key of
/// its own is refused.
fn a_sidecar_with_another_key_under_its_origin_is_refused(first: &Claim<'_>, first_dir: &Path) {
    let b_dir = tempdir();
    std::fs::create_dir_all(b_dir.path().join("cache")).unwrap();
    std::fs::copy(
        first_dir.join("cache/origin"),
        b_dir.path().join("cache/origin"),
    )
    .unwrap();
    let err = first.heartbeat_error(b_dir.path(), "the impostor's heartbeat is refused");
    assert!(err.contains("409") && err.contains("another key"), "{err}");
}

/// The first sidecar's whole state (its key too), run for another agent: refused as well.
fn its_state_run_for_another_agent_is_refused(
    second: &Claim<'_>,
    first_dir: &Path,
    first_id: &str,
) {
    let c_dir = tempdir();
    copy_dir(first_dir, c_dir.path());
    let err = second.heartbeat_error(
        c_dir.path(),
        "a heartbeat for another agent's origin is refused",
    );
    assert!(err.contains("409") && err.contains(first_id), "{err}");
}

/// A sidecar refuses to start without a bundle that verifies; the init container's check says
/// why and exits non-zero.
#[test]
fn a_sidecar_starts_only_with_a_verified_bundle() {
    let control_dir = tempdir();
    let control = Gateway::start(control_dir.path());
    policy(&control, "reads", READS);
    let pod = tempdir();
    let bundle = bundle_files(&control, pod.path());
    let check = |pubkey: &str| {
        std::process::Command::new(crate::harness::binary())
            .env_clear()
            .arg("--check-policy-bundle")
            .env("POLICY_BUNDLE", &bundle.0)
            .env("POLICY_BUNDLE_PUBKEY", pubkey)
            .output()
            .unwrap()
    };
    let good = check(&bundle.1);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("1 policies (reads)"));

    let mut altered = std::fs::read_to_string(&bundle.0).unwrap();
    altered = altered.replacen("allow-read", "allow-reed", 1);
    std::fs::write(&bundle.0, altered).unwrap();
    let bad = check(&bundle.1);
    assert!(!bad.status.success());
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("policy bundle refused"), "{why}");

    let out = crate::harness::command(
        pod.path(),
        &Options {
            env: vec![
                ("SIDECAR_AGENT_ID", "agent_x".into()),
                ("POLICY_BUNDLE", bundle.0.clone()),
                ("POLICY_BUNDLE_PUBKEY", bundle.1.clone()),
                ("CACHE_DIR", pod.path().join("cache").display().to_string()),
            ],
            args: Vec::new(),
            program: None,
        },
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("no verified policy bundle"), "{why}");
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else if !e.file_name().to_string_lossy().ends_with(".log") {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A disconnected sidecar (no GATEWAY_URL): its log, exported on its loopback and carried by
/// hand, is ingested by the admin once, then only what follows on; altered entries, bare export
/// lines and another key under its origin are refused, with nothing half-applied.
#[test]
fn a_disconnected_sidecars_export_is_ingested_only_as_its_key_signed_it() {
    let control_dir = tempdir();
    let control = Gateway::start(control_dir.path());
    policy(&control, "reads", READS);
    let (agent_id, _) = agent(&control, "edge", "verified", &[]);
    let pod = tempdir();
    let bundle = bundle_files(&control, pod.path());
    let offline = |dir: &Path| {
        Gateway::start_with(
            dir,
            Options {
                env: vec![
                    ("SIDECAR_AGENT_ID", agent_id.clone()),
                    ("POLICY_BUNDLE", bundle.0.clone()),
                    ("POLICY_BUNDLE_PUBKEY", bundle.1.clone()),
                    ("CACHE_DIR", dir.join("cache").display().to_string()),
                ],
                args: Vec::new(),
                program: None,
            },
        )
    };
    let sidecar = offline(pod.path());
    for action in ["read:a", "read:b", "write:c"] {
        enforce(&sidecar, json!({"action": action}));
    }
    let export = sidecar.get_text("/sidecar/export");
    let doc: Value = serde_json::from_str(&export).unwrap();
    assert_eq!(doc["lines"].as_array().unwrap().len(), 3, "{doc}");
    let ingest = |body: &str| ingest(&control, body);
    altered_or_bare_exports_are_refused_whole(&export, &doc, &ingest);
    assert!(
        sidecar_row(&control, &agent_id).is_none(),
        "nothing registered by refusals"
    );
    let (status, report) = ingest(&export);
    assert_eq!(
        (status, report["inserted"].as_u64()),
        (200, Some(3)),
        "{report}"
    );
    let (status, report) = ingest(&export);
    assert_eq!(
        (status, report["inserted"].as_u64()),
        (200, Some(0)),
        "ingesting twice is a no-op: {report}"
    );
    enforce(&sidecar, json!({"action": "read:d"}));
    let more = sidecar.get_text("/sidecar/export?after=3");
    let (status, report) = ingest(&more);
    assert_eq!(
        (status, report["inserted"].as_u64(), report["held"].as_u64()),
        (200, Some(1), Some(4)),
        "{report}"
    );
    let (_, v) = control.get("/admin/audit/verify");
    assert_eq!(v["valid"], true, "{v}");
    let row = sidecar_row(&control, &agent_id).unwrap();
    assert_eq!(row["entriesHeld"], 4, "{row}");

    let impostor = tempdir();
    an_impostor_under_the_same_origin_is_refused(pod.path(), impostor.path(), &offline, &ingest);
    assert_eq!(sidecar_row(&control, &agent_id).unwrap()["entriesHeld"], 4);
    let origin = row["origin"].as_str().unwrap().to_owned();
    the_ingested_chain_survives_a_lost_index(control, control_dir.path(), &origin);
}

/// `POST /admin/audit/ingest` of `body` with the admin token.
fn ingest(control: &Gateway, body: &str) -> (u16, Value) {
    parse(
        control
            .admin(Method::POST, "/admin/audit/ingest")
            .body(body.to_owned())
            .send()
            .unwrap(),
    )
}

/// An altered export is refused whole; bare lines, as anyone could write them, are refused.
fn altered_or_bare_exports_are_refused_whole(
    export: &str,
    doc: &Value,
    ingest: &dyn Fn(&str) -> (u16, Value),
) {
    let tampered = export.replacen("read:b", "read:z", 1);
    let (status, body) = ingest(&tampered);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("do not rebuild"),
        "{body}"
    );
    let bare: String = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let (status, body) = ingest(&bare);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("signed by the sidecar's key"),
        "{body}"
    );
}

/// Another sidecar claiming the origin in `pod/cache` with its own key (in `other`) is
/// refused.
fn an_impostor_under_the_same_origin_is_refused(
    pod: &Path,
    other: &Path,
    offline: &dyn Fn(&Path) -> Gateway,
    ingest: &dyn Fn(&str) -> (u16, Value),
) {
    std::fs::create_dir_all(other.join("cache")).unwrap();
    std::fs::copy(pod.join("cache/origin"), other.join("cache/origin")).unwrap();
    let impostor = offline(other);
    enforce(&impostor, json!({"action": "read:forged"}));
    let (status, body) = ingest(&impostor.get_text("/sidecar/export"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("another key"),
        "{body}"
    );
}

/// The ingested entries keep their source in the log directory itself: with the index lost,
/// the restarted gateway rebuilds it from the tiles, and the sidecar's chain is the one the
/// sidecar exported, hash for hash.
fn the_ingested_chain_survives_a_lost_index(control: Gateway, control_dir: &Path, origin: &str) {
    let before = control.get_text(&format!("/admin/audit/export?source={origin}"));
    assert_eq!(before.lines().count(), 4, "{before}");
    control.kill9();
    let db = rusqlite::Connection::open(control_dir.join("data/meshguard.db")).unwrap();
    db.execute("DELETE FROM audit_index", []).unwrap();
    drop(db);
    let control = Gateway::start(control_dir);
    // The rebuild runs behind the log; the export shows what is indexed, so wait for it.
    let url = format!("/admin/audit/export?source={origin}");
    let after = eventually("the rebuilt index holds the sidecar's entries", || {
        let text = control.get_text(&url);
        (text.lines().count() == 4).then_some(text)
    });
    assert_eq!(after, before);
    let (_, v) = control.get("/admin/audit/verify");
    assert_eq!(v["valid"], true, "{v}");
}

/// A heartbeat's log, forged as an agent that runs its own "sidecar" could: a fresh origin and
/// key of its own (first contact registers them), lines chained and signed by that key.
mod forge {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use ed25519_dalek::{Signer as _, SigningKey};
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};

    const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// The heartbeat body carrying `entries` as the log of `origin`, signed by a key made from
    /// `seed` (C2SP signed-note and RFC 6962, as the gateway's sidecars write them).
    pub(super) fn heartbeat(origin: &str, seed: u8, entries: &[Value]) -> Value {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let public = key.verifying_key().to_bytes();
        let mut id_input = format!("{origin}\n").into_bytes();
        id_input.push(0x01);
        id_input.extend_from_slice(&public);
        let key_id = &Sha256::digest(&id_input)[..4];
        let mut raw = vec![0x01];
        raw.extend_from_slice(&public);
        let vkey = format!("{origin}+{}+{}", hex::encode(key_id), B64.encode(raw));

        let mut prev = GENESIS.to_owned();
        let mut leaves = Vec::new();
        let mut lines = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            // Canonical: keys in sorted order (the values are strings and integers).
            let sorted: std::collections::BTreeMap<String, Value> =
                serde_json::from_value(entry.clone()).unwrap();
            let body = serde_json::to_string(&sorted).unwrap();
            let mut h = Sha256::new();
            h.update(hex::decode(&prev).unwrap());
            h.update(body.as_bytes());
            let hash = hex::encode(h.finalize());
            let mut leaf = Sha256::new();
            leaf.update([0u8]);
            leaf.update(body.as_bytes());
            leaves.push(leaf.finalize().to_vec());
            lines.push(json!({"seq": i + 1, "source": origin, "prevHash": prev, "hash": hash, "entry": entry}));
            prev = hash;
        }
        let root = merkle_root(&leaves);
        let text = format!("{origin}\n{}\n{}\n", leaves.len(), B64.encode(&root));
        let mut blob = key_id.to_vec();
        blob.extend_from_slice(&key.sign(text.as_bytes()).to_bytes());
        let note = format!("{text}\n\u{2014} {origin} {}\n", B64.encode(blob));
        json!({"origin": origin, "vkey": vkey, "lines": lines, "checkpoint": note})
    }

    /// RFC 6962 §2.1: the Merkle tree hash of `leaves` (already leaf-hashed).
    fn merkle_root(leaves: &[Vec<u8>]) -> Vec<u8> {
        if leaves.len() == 1 {
            return leaves[0].clone();
        }
        let split = leaves.len().next_power_of_two() / 2;
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(merkle_root(&leaves[..split]));
        h.update(merkle_root(&leaves[split..]));
        h.finalize().to_vec()
    }

    /// A decision entry.
    pub(super) fn decision(agent: Option<&str>, action: &str, trace: &str) -> Value {
        let mut e = json!({
            "action": action,
            "decision": "allow",
            "event": "decision",
            "id": format!("aud_{trace}"),
            "mode": "enforce",
            "outcome": "allow",
            "snapshot": 1,
            "timestamp": "2026-12-06T00:00:00Z",
            "traceId": trace,
        });
        if let Some(a) = agent {
            e["agentId"] = json!(a);
        }
        e
    }
}

/// Issue #32 item 3: an agent cannot plant entries attributed to another agent through the
/// heartbeat. A log signed by its own key, about another agent (or a decision naming none), is
/// refused whole, recorded as a bypass attempt of the sender and alerted; its own entries are
/// taken.
#[test]
fn a_heartbeat_carries_only_its_own_agents_entries() {
    let rx = PythonServer::start("receiver.py", &["whsec-sidecar-forge-7a1c"]);
    let dir = tempdir();
    let control = Gateway::start(dir.path());
    let (status, _) = control.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": format!("{}/hook", rx.url), "webhookSecret": "whsec-sidecar-forge-7a1c", "triggers": ["deny"], "severity": "critical"}),
    );
    assert_eq!(status, 201);
    let (mallory, token) = agent(&control, "mallory", "verified", &[]);
    let (victim, _) = agent(&control, "victim", "verified", &[]);
    let send = |body: &Value| {
        parse(
            control
                .raw(Method::POST, "/api/v1/sidecars/heartbeat")
                .bearer_auth(&token)
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let forged = [
        (
            "forged-other",
            forge::decision(Some(&victim), "delete:prod/customers", "forged-1"),
        ),
        (
            "forged-none",
            forge::decision(None, "delete:prod/customers", "forged-2"),
        ),
    ];
    for (i, (origin, entry)) in forged.iter().enumerate() {
        let (status, body) = send(&forge::heartbeat(origin, 7 + i as u8, &[entry.clone()]));
        assert_eq!(status, 400, "{origin}: {body}");
        assert_eq!(body["field"], "lines[0].entry.agentId", "{body}");
    }
    for trace in ["forged-1", "forged-2"] {
        let (_, list) = control.get(&format!("/admin/audit?traceId={trace}"));
        assert_eq!(list["entries"].as_array().unwrap().len(), 0, "{list}");
    }
    let (_, list) = control.get(&format!("/admin/audit?agentId={victim}"));
    assert_eq!(list["entries"].as_array().unwrap().len(), 0, "{list}");
    // The sender's attempts are on record, with a critical alert.
    let (_, list) = control.get(&format!("/admin/audit?agentId={mallory}"));
    let attempts: Vec<&Value> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "bypass_attempt" && e["action"] == "sidecar:heartbeat")
        .collect();
    assert_eq!(attempts.len(), 2, "{list}");
    let got = rx.received(1);
    assert!(
        got.iter()
            .any(|d| d["body"]["entry"]["action"] == "sidecar:heartbeat"
                && d["body"]["severity"] == "critical"),
        "{got:?}"
    );
    // Its own entries are taken.
    let own = forge::decision(Some(&mallory), "read:notes", "own-1");
    let (status, body) = send(&forge::heartbeat("own-origin", 21, &[own]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["held"], 1, "{body}");
    let (_, list) = control.get("/admin/audit?traceId=own-1");
    assert_eq!(list["entries"][0]["agentId"], mallory.as_str());
    let (_, verify) = control.get("/admin/audit/verify");
    assert_eq!(verify["valid"], true, "{verify}");
}

/// Issue #32 item 10: a heartbeat is bounded by bytes, not only by lines: 200 entries of about
/// 7 KB each (1.4 MB, over the control plane's 1 MiB body limit) reach it in several beats,
/// where one beat of them was refused (413) on every try.
#[test]
fn long_entries_reach_the_control_plane_in_beats_that_fit_its_body_limit() {
    let control_dir = tempdir();
    let control = Gateway::start(control_dir.path());
    policy(&control, "reads", READS);
    let (agent_id, token) = agent(&control, "chatty", "verified", &[]);
    let pod = tempdir();
    let bundle = bundle_files(&control, pod.path());
    let token_file = pod.path().join("agent.token");
    std::fs::write(&token_file, &token).unwrap();
    // Heartbeats every 20 s (the first at start): the entries are all written before the beat
    // that carries them.
    let sidecar = Gateway::start_with(
        pod.path(),
        sidecar_options(
            &agent_id,
            &bundle,
            &control,
            &token_file,
            &pod.path().join("cache"),
            vec![("BUNDLE_SYNC_INTERVAL", "20".into())],
        ),
    );
    let note = "n".repeat(7000);
    for batch in 0..4 {
        let actions: Vec<Value> = (0..50)
            .map(|i| json!({"action": format!("read:doc/{batch}/{i}"), "context": {"note": note}}))
            .collect();
        let (status, body) = parse(
            sidecar
                .raw(Method::POST, "/enforce/batch")
                .json(&json!({"agentId": agent_id, "actions": actions}))
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let row = loop {
        let row = sidecar_row(&control, &agent_id);
        if row
            .as_ref()
            .is_some_and(|r| r["entriesHeld"].as_u64() >= Some(200))
        {
            break row.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the control plane never held the 200 long entries: {row:?} {}",
            sidecar.get("/health").1
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(row["entriesHeld"].as_u64().unwrap() >= 200, "{row}");
    let (_, health) = sidecar.get("/health");
    assert!(
        health["heartbeat"]["lastError"].is_null(),
        "no beat was refused: {health}"
    );
}
