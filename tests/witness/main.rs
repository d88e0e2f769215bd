//! The site witness (issue #16, its first part): `meshguard-witness` on a "disconnected
//! workstation" cosigns the real gateway's checkpoints from tlog-witness request files, keeps
//! the last one it cosigned, and refuses what a witness must refuse, above all a log whose
//! operator rewrote history and signed it again with the same key. The cosignatures are
//! checked with openssl, not with our code. The local audit archive (`meshguard-bundle
//! audit-archive`) keeps only segments a signed checkpoint proves, and its directory verifies on
//! its own (and with `sha256sum -c`).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

#[path = "../support/mod.rs"]
mod support;

use meshguard_testkit::wait_for;
use support::{ADMIN, Gateway, WitnessCli, spawn_gateway};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn bins() -> PathBuf {
    support::bins(&["meshguard-gateway", "meshguard-witness", "meshguard-bundle"])
}

impl Gateway {
    /// A gateway on `dir`, with the audit log `origin` signed by the key file `key`.
    fn start(dir: &Path, origin: &str, key: &Path, witnesses: &str) -> Self {
        let (child, url) = spawn_gateway(
            dir,
            &[
                ("POLICIES_DIR", dir.join("policies").into()),
                ("AUDIT_ORIGIN", origin.into()),
                ("AUDIT_KEY_FILE", key.into()),
                ("RATE_LIMIT_RPM", "0".into()),
                ("AUDIT_WITNESSES", witnesses.into()),
            ],
        );
        let gw = Self {
            child,
            url,
            http: reqwest::blocking::Client::new(),
        };
        let (_, _) = gw.admin(reqwest::Method::POST, "/admin/policies", Some(json!({
            "name": "reads", "content": "name: reads\nrules:\n  - name: r\n    effect: allow\n    actions: [\"read:*\"]\n"})));
        gw
    }

    fn verify(&self) -> Value {
        let (s, body) = self.admin(reqwest::Method::GET, "/admin/audit/verify", None);
        assert_eq!(s, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `n` decisions (allowed and denied) by a new agent.
    fn decisions(&self, agent: &str, n: usize) {
        let (s, body) = self.admin(
            reqwest::Method::POST,
            "/admin/agents",
            Some(json!({"name": agent, "trustTier": "verified"})),
        );
        assert_eq!(s, 201, "{body}");
        let token = serde_json::from_str::<Value>(&body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        for i in 0..n {
            let action = if i % 2 == 0 { "read:x" } else { "write:x" };
            self.http
                .get(format!("{}/proxy/check", self.url))
                .bearer_auth(&token)
                .header("X-MeshGuard-Action", action)
                .send()
                .unwrap();
        }
    }
}

/// Checks a cosignature/v1 line with openssl: the witness's Ed25519 key from its vkey, the
/// message of tlog-cosignature.md.
fn openssl_verifies(note: &str, line: &str, witness_vkey: &str, dir: &Path) -> bool {
    let key = B64
        .decode(witness_vkey.splitn(3, '+').nth(2).unwrap())
        .unwrap();
    assert_eq!(key[0], 0x04, "a cosignature key");
    let mut spki = hex_bytes("302a300506032b6570032100");
    spki.extend_from_slice(&key[1..]);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(&spki)
    );
    let raw = B64
        .decode(line.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 76);
    let ts = u64::from_be_bytes(raw[4..12].try_into().unwrap());
    let body = &note[..=note.rfind("\n\n").unwrap()];
    let msg = format!("cosignature/v1\ntime {ts}\n{body}");
    std::fs::write(dir.join("w.pem"), pem).unwrap();
    std::fs::write(dir.join("msg"), msg).unwrap();
    std::fs::write(dir.join("sig"), &raw[12..]).unwrap();
    Command::new("openssl")
        .args([
            "pkeyutl", "-verify", "-pubin", "-inkey", "w.pem", "-rawin", "-in", "msg", "-sigfile",
            "sig",
        ])
        .current_dir(dir)
        .output()
        .unwrap()
        .status
        .success()
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn size_of(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_site_witness_cosigns_the_log_and_refuses_a_rewritten_history() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = "site.example/meshguard-audit";
    let key = tmp.path().join("audit-log.key");
    let w = WitnessCli {
        dir: tempfile::tempdir().unwrap(),
    };
    let (code, witness_vkey, err) = w.run(&["init", "--name", "witness.site.example/w1"]);
    assert_eq!(code, 0, "{err}");
    let witness_vkey = witness_vkey.trim().to_owned();
    assert!(witness_vkey.starts_with("witness.site.example/w1+"));
    let gw = Gateway::start(&tmp.path().join("gw"), origin, &key, &witness_vkey);
    gw.decisions("clerk", 6);
    let (note, log_vkey) = gw.checkpoint();
    let (code, _, err) = w.run(&["trust", &log_vkey]);
    assert_eq!(code, 0, "{err}");

    let site = Site {
        w: &w,
        witness_vkey: &witness_vkey,
        dir: tmp.path(),
    };
    let first = the_first_cosignature_is_kept_and_reported(&site, &gw, &note);
    let note2 = the_grown_log_is_cosigned_from_the_last_size(&site, &gw, first);
    replays_broken_signatures_and_unknown_logs_are_refused(&site, &gw, &note2);
    let note3 = a_wrong_proof_is_refused_and_the_right_one_passes(&site, &gw, &note2);
    a_lost_cosigned_checkpoint_fails_verification(&site, &gw, &note2);
    drop(gw);
    let rogue = Gateway::start(&tmp.path().join("rogue"), origin, &key, &witness_vkey);
    a_rewritten_history_is_refused(&site, &rogue, &log_vkey, &note3);
}

/// The witness, its key, and the test's directory.
struct Site<'a> {
    w: &'a WitnessCli,
    witness_vkey: &'a str,
    dir: &'a Path,
}

/// First cosignature, from size 0, checked by openssl; the gateway keeps it (the witness
/// proof cache) and verification reports the checkpoint witnessed; a cosignature by a witness
/// the site does not trust is refused. Returns the size cosigned.
fn the_first_cosignature_is_kept_and_reported(site: &Site<'_>, gw: &Gateway, note: &str) -> u64 {
    let Site {
        w,
        witness_vkey,
        dir,
    } = site;
    let (code, line, err) = w.cosign(&gw.request(0));
    assert_eq!(code, 0, "{err}");
    assert!(
        openssl_verifies(note, &line, witness_vkey, dir),
        "openssl checks the cosignature"
    );
    let first = size_of(note);
    // The gateway keeps it (the witness proof cache) and verification reports the checkpoint
    // witnessed.
    let (status, added) = gw.add_cosignatures(&line);
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["accepted"][0]["size"], first);
    let report = gw.verify();
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(
        report["witnesses"]["latestWitnessedSize"], first,
        "{report}"
    );
    // A cosignature by a witness the site does not trust is refused.
    let (status, refused) =
        gw.add_cosignatures(&line.replace("witness.site.example/w1", "stranger.example/w9"));
    assert_eq!(status, 400, "{refused}");

    first
}

/// The log grows: cosigned again, from the size last cosigned. Returns the new checkpoint.
fn the_grown_log_is_cosigned_from_the_last_size(
    site: &Site<'_>,
    gw: &Gateway,
    first: u64,
) -> String {
    let Site {
        w,
        witness_vkey,
        dir,
    } = site;
    gw.decisions("clerk-2", 5);
    let (note2, _) = gw.checkpoint();
    assert!(size_of(&note2) > first);
    let (code, line, err) = w.cosign(&gw.request(first));
    assert_eq!(code, 0, "{err}");
    assert!(openssl_verifies(&note2, &line, witness_vkey, dir));
    assert_eq!(gw.add_cosignatures(&line).0, 200);
    assert_eq!(
        gw.verify()["witnesses"]["latestWitnessedSize"],
        size_of(&note2)
    );

    note2
}

/// A replayed request from an old size: 409, with the size to prove from; a checkpoint whose
/// log signature is broken: 403; a log the witness does not follow: 404.
fn replays_broken_signatures_and_unknown_logs_are_refused(
    site: &Site<'_>,
    gw: &Gateway,
    note2: &str,
) {
    let Site { w, dir, .. } = site;
    let (code, body, err) = w.cosign(&gw.request(0));
    assert_eq!(code, 6, "{err}");
    assert_eq!(body.trim(), size_of(note2).to_string());

    let req = gw.request(size_of(note2));
    let sig_line = req.lines().last().unwrap().to_owned();
    let mut broken_sig = sig_line.clone();
    let at = broken_sig.len() - 6;
    broken_sig.replace_range(
        at..at + 1,
        if &broken_sig[at..at + 1] == "A" {
            "B"
        } else {
            "A"
        },
    );
    let (code, _, err) = w.cosign(&req.replace(&sig_line, &broken_sig));
    assert_eq!(code, 3, "{err}");

    let other = Gateway::start(
        &dir.join("other"),
        "other.example/meshguard-audit",
        &dir.join("other.key"),
        "",
    );
    other.decisions("x", 2);
    other.checkpoint();
    let (code, _, err) = w.cosign(&other.request(0));
    assert_eq!(code, 4, "{err}");
}

/// A wrong proof for a real extension: 422; the right one then passes. Returns the
/// checkpoint cosigned.
fn a_wrong_proof_is_refused_and_the_right_one_passes(
    site: &Site<'_>,
    gw: &Gateway,
    note2: &str,
) -> String {
    let Site {
        w,
        witness_vkey,
        dir,
    } = site;
    gw.decisions("clerk-3", 3);
    let (note3, _) = gw.checkpoint();
    let req = gw.request(size_of(note2));
    let proof_line = req.lines().nth(1).unwrap().to_owned();
    let mut h = B64.decode(&proof_line).unwrap();
    h[0] ^= 1;
    let (code, _, err) = w.cosign(&req.replacen(&proof_line, &B64.encode(h), 1));
    assert_eq!(code, 7, "{err}");
    let (code, line, err) = w.cosign(&req);
    assert_eq!(code, 0, "{err}");
    assert!(openssl_verifies(&note3, &line, witness_vkey, dir));

    note3
}

/// A cosigned checkpoint that disappears from the gateway (history rewritten behind its
/// back) fails verification, naming the checkpoint and the witness.
fn a_lost_cosigned_checkpoint_fails_verification(site: &Site<'_>, gw: &Gateway, note2: &str) {
    let db = rusqlite::Connection::open(site.dir.join("gw/meshguard.db")).unwrap();
    db.execute(
        "DELETE FROM audit_checkpoints WHERE size = ?1",
        [size_of(note2) as i64],
    )
    .unwrap();
    let report = gw.verify();
    assert_eq!(report["valid"], false, "{report}");
    let problem = report["firstBad"]["problem"].as_str().unwrap();
    assert!(
        problem.contains(&format!("size {}", size_of(note2)))
            && problem.contains("witness.site.example/w1"),
        "{problem}"
    );
}

/// The operator rewrites history: a new log under the same origin, signed with the same key
/// (copied), with other entries and more of them. Every checkpoint it signs is valid on its
/// own, but it is not an extension of what the witness cosigned: refused.
fn a_rewritten_history_is_refused(site: &Site<'_>, rogue: &Gateway, log_vkey: &str, note3: &str) {
    let w = site.w;
    rogue.decisions("forger", 40);
    let (forged, rogue_vkey) = rogue.checkpoint();
    assert_eq!(rogue_vkey, log_vkey, "the same log key");
    assert!(size_of(&forged) > size_of(note3));
    let (code, _, err) = w.cosign(&rogue.request(size_of(note3)));
    assert_eq!(code, 7, "a rewritten history is refused: {err}");
    assert!(err.contains("not an extension"), "{err}");
    let (_, status, _) = w.run(&["status"]);
    assert!(
        status.contains(&format!("cosigned up to size {}", size_of(note3))),
        "{status}"
    );
}

/// `meshguard-bundle audit-archive ARGS` with the admin token in the environment.
fn archive(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bins().join("meshguard-bundle"))
        .arg("audit-archive")
        .args(args)
        .env("MESHGUARD_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_audit_archive_keeps_what_signed_checkpoints_prove_and_verifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = "archive.example/meshguard-audit";
    let key = tmp.path().join("audit-log.key");
    let gw = Gateway::start(&tmp.path().join("gw"), origin, &key, "");
    gw.decisions("clerk", 5);
    let (_, vkey) = gw.checkpoint();
    let dir = tmp.path().join("archive");
    let d = dir.to_str().unwrap();
    let pull = |extra: &[&str]| {
        let mut args = vec!["pull", "--dir", d, "--gateway", gw.url.as_str()];
        args.extend_from_slice(extra);
        archive(&args)
    };
    let (code, out, err) = pull(&["--vkey", &vkey]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("archived entries 1..="), "{out}");
    gw.decisions("clerk-2", 4);
    let (code, out, err) = pull(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("archived entries"), "{out}");
    let (code, out, err) = pull(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nothing new"), "{out}");

    // The directory checks on its own: stock sha256sum for the files, our verifier for the log.
    let sums = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let (code, out, err) = archive(&["verify", d, "--vkey", &vkey]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 segments, 2 signed checkpoints"), "{out}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("ARCHIVE.json")).unwrap()).unwrap();
    let entries = state["size"].as_u64().unwrap();
    assert!(entries >= 9, "{state}");
    assert!(out.contains(&format!("{entries} entries")), "{out}");

    // Another log's key is refused.
    let other = Gateway::start(
        &tmp.path().join("other"),
        "other.example/meshguard-audit",
        &tmp.path().join("other.key"),
        "",
    );
    let (_, other_vkey) = other.checkpoint();
    let (code, _, err) = archive(&["verify", d, "--vkey", &other_vkey]);
    assert_ne!(code, 0);
    assert!(err.contains("pinned to"), "{err}");

    an_altered_entry_is_found_even_with_its_digest_forged(&dir, &tmp.path().join("copy"), &state);
    // The operator rewrites history: a new log under the same origin and key. The archive
    // refuses it and keeps what it had.
    drop(gw);
    let rogue = Gateway::start(&tmp.path().join("rogue"), origin, &key, "");
    rogue.decisions("someone-else", 3);
    let (code, _, err) = archive(&["pull", "--dir", d, "--gateway", rogue.url.as_str()]);
    assert_ne!(code, 0, "a rewritten log is refused");
    assert!(
        err.contains("truncated or replaced")
            || err.contains("rewritten")
            || err.contains("altered"),
        "{err}"
    );
    let (code, out, err) = archive(&["verify", d]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{entries} entries")), "{out}");
}

/// An entry altered in a copy of the archive, with the segment's recorded digest made to
/// match: the chain gives it away.
fn an_altered_entry_is_found_even_with_its_digest_forged(dir: &Path, copy: &Path, state: &Value) {
    std::fs::create_dir_all(copy.join("segments")).unwrap();
    std::fs::create_dir_all(copy.join("checkpoints")).unwrap();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_dir() {
            for g in std::fs::read_dir(f.path()).unwrap() {
                let g = g.unwrap();
                std::fs::copy(g.path(), copy.join(f.file_name()).join(g.file_name())).unwrap();
            }
        } else {
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
    }
    let first = state["segments"][0]["file"].as_str().unwrap();
    let text = std::fs::read_to_string(copy.join(first)).unwrap();
    assert!(text.contains("\"decision\":\"deny\""), "{text}");
    let altered = text.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    std::fs::write(copy.join(first), &altered).unwrap();
    let (code, _, err) = archive(&["verify", copy.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("not what was archived"), "{err}");
    let mut forged = state.clone();
    forged["segments"][0]["sha256"] = json!(hex_of(&sha2::Sha256::digest(altered.as_bytes())));
    std::fs::write(copy.join("ARCHIVE.json"), forged.to_string()).unwrap();
    let (code, _, err) = archive(&["verify", copy.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("altered"), "{err}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The archive job reaches a gateway serving HTTPS with a site CA (made by openssl here) only
/// when given that CA.
#[test]
fn the_audit_archive_pulls_from_an_https_gateway_trusting_the_site_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    meshguard_testkit::ca::make_ca(p, "gw", "IP:127.0.0.1");
    let (mut child, url) = spawn_gateway(
        &p.join("gw"),
        &[
            ("TLS_CERT_FILE", p.join("gw.pem").into()),
            ("TLS_KEY_FILE", p.join("gw.key").into()),
        ],
    );
    assert!(url.starts_with("https://"), "{url}");
    let dir = p.join("archive");
    let d = dir.to_str().unwrap();
    let (code, _, err) = archive(&["pull", "--dir", d, "--gateway", &url]);
    assert_ne!(code, 0, "an unknown CA is not trusted");
    assert!(err.contains("did not answer"), "{err}");
    let ca = p.join("ca.pem");
    let (code, out, err) = archive(&[
        "pull",
        "--dir",
        d,
        "--gateway",
        &url,
        "--ca-bundle",
        ca.to_str().unwrap(),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pinned the log key"), "{out}");
}

/// The largest checkpoint size `witness` cosigned, as the gateway's proof cache holds it.
fn cosigned_size(gw: &Gateway, witness: &str) -> u64 {
    let (s, body) = gw.admin(reqwest::Method::GET, "/admin/audit/cosignatures", None);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["cosignatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["witness"] == witness)
        .filter_map(|c| c["size"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A connected witness (C2SP tlog-witness over HTTP): the gateway sends each new checkpoint
/// with its consistency proof and keeps the cosignature, with no one carrying files; a witness
/// that does not follow the log yet is retried; a cosignature lost on the way back (the witness
/// holds a larger size than the gateway knows) is recovered through the 409 it answers.
#[test]
fn a_connected_witness_cosigns_each_checkpoint_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let w = WitnessCli {
        dir: tempfile::tempdir().unwrap(),
    };
    let name = "witness.site.example/online";
    let (code, witness_vkey, err) = w.run(&["init", "--name", name]);
    assert_eq!(code, 0, "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let served = w.serve(port);
    let dir = tmp.path().join("gw");
    let (child, url) = spawn_gateway(
        &dir,
        &[
            ("POLICIES_DIR", dir.join("policies").into()),
            ("AUDIT_ORIGIN", "online.site.example/meshguard-audit".into()),
            ("RATE_LIMIT_RPM", "0".into()),
            ("AUDIT_WITNESSES", witness_vkey.trim().into()),
            (
                "AUDIT_WITNESS_URLS",
                format!("{name}={}", served.url).into(),
            ),
        ],
    );
    let gw = Gateway {
        child,
        url,
        http: reqwest::blocking::Client::new(),
    };
    gw.decisions("clerk", 4);
    let (note, log_vkey) = gw.checkpoint();
    // The witness does not follow this log yet: 404s, retried, and said in the gateway's log.
    // Then it is told to.
    wait_for("the witness's refusal in the gateway log", || {
        std::fs::read_to_string(dir.join("gateway.log"))
            .unwrap_or_default()
            .contains("answered 404")
    });
    assert_eq!(cosigned_size(&gw, name), 0);
    let (code, _, err) = w.run(&["trust", &log_vkey]);
    assert_eq!(code, 0, "{err}");
    wait_for("the first cosignature", || {
        cosigned_size(&gw, name) == size_of(&note)
    });
    let report = gw.verify();
    assert_eq!(
        report["witnesses"]["latestWitnessedSize"],
        size_of(&note),
        "{report}"
    );

    // The log grows; the next checkpoint is cosigned from the last, again by itself.
    gw.decisions("clerk-2", 3);
    let (note2, _) = gw.checkpoint();
    wait_for("the second cosignature", || {
        cosigned_size(&gw, name) == size_of(&note2)
    });

    // The witness goes offline and cosigns from files meanwhile, an answer that never comes
    // back: it then holds a size the gateway does not know. Back online, its 409 says which,
    // and the gateway proves from there.
    drop(served);
    gw.decisions("clerk-3", 2);
    let (note3, _) = gw.checkpoint();
    let (code, _, err) = w.cosign(&gw.request(size_of(&note2)));
    assert_eq!(code, 0, "{err}");
    gw.decisions("clerk-4", 2);
    let (note4, _) = gw.checkpoint();
    assert!(size_of(&note4) > size_of(&note3));
    let _served = w.serve(port);
    wait_for("the cosignature after the 409", || {
        cosigned_size(&gw, name) == size_of(&note4)
    });
    assert_eq!(
        cosigned_size(&gw, name),
        size_of(&note4),
        "the size the files cosigned ({}) was skipped, not lost: the cosignature of {} covers it",
        size_of(&note3),
        size_of(&note4)
    );
}
