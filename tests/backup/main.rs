//! Backup and restore (issue #37): a site is backed up while it decides, destroyed, and restored
//! from the backup alone with no network (`unshare -n`); the restored gateway continues the same
//! log, says in it that it was restored, and decides on. The backup checks with stock tools
//! (`sha256sum -c`, `minisign -V`), its database copy is age-encrypted to the site's recipient
//! (`age-keygen`), and Go's sumdb/tlog proves the restored log consistent with the backup's
//! checkpoint.

#[path = "../support/mod.rs"]
mod support;

mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use support::{ADMIN, Gateway, bins};

const ORIGIN: &str = "backup.site.example/meshguard-audit";
const PASSPHRASE: &str = "backup-signing-passphrase-for-tests";
/// The key files a site keeps apart from its backups (docs/keys.md).
const KEY_FILES: [&str; 3] = ["audit-log.key", "secrets.key", "policy-bundle.key"];

fn bundle(args: &[&str], cwd: &Path) -> Output {
    bundle_with(args, cwd, &[])
}

/// `meshguard-bundle` with `env` besides the passphrase and the admin token.
fn bundle_with(args: &[&str], cwd: &Path, env: &[(&str, std::ffi::OsString)]) -> Output {
    Command::new(bins(&["meshguard-bundle"]).join("meshguard-bundle"))
        .args(args)
        .current_dir(cwd)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .env("MESHGUARD_ADMIN_TOKEN", ADMIN)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// `backup take` of the gateway at `url` into `backup`, signed with `k.key`, its database
/// encrypted to `recipient`, with `env` besides.
fn take_backup(url: &str, recipient: &str, env: &[(&str, std::ffi::OsString)], t: &Path) -> Output {
    bundle_with(
        &[
            "backup",
            "take",
            "--gateway",
            url,
            "--out",
            "backup",
            "--key",
            "k.key",
            "--recipient",
            recipient,
        ],
        t,
        env,
    )
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded and should not have"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn site(dir: &Path) -> Gateway {
    Gateway::spawn(
        dir,
        &[
            ("AUDIT_ORIGIN", ORIGIN.into()),
            ("RATE_LIMIT_RPM", "0".into()),
            ("POLICIES_DIR", dir.join("policies").into()),
        ],
    )
}

/// The actions of the gateway's log, in order.
fn logged_actions(gw: &Gateway) -> Vec<String> {
    let (status, body) = gw.admin(reqwest::Method::GET, "/admin/audit/export", None);
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| l["entry"]["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_site_backed_up_under_load_is_restored_offline_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    keys(t);
    let recipient = age_identity(t);
    let gw = site(&t.join("site"));
    policy(&gw);
    let token = gw.agent("clerk", "verified");
    let answered = Mutex::new(Vec::<String>::new());
    let stop = AtomicBool::new(false);
    let before = std::thread::scope(|s| {
        s.spawn(|| decide(&gw, &token, &answered, &stop));
        meshguard_testkit::wait_for("decisions before the backup", || {
            answered.lock().unwrap().len() >= 50
        });
        // Every decision answered before the backup starts must be in it.
        let before = answered.lock().unwrap().clone();
        ok(take_backup(&gw.url, &recipient, &[], t), "backup take");
        let after = answered.lock().unwrap().len();
        meshguard_testkit::wait_for("decisions after the backup", || {
            answered.lock().unwrap().len() >= after + 20
        });
        stop.store(true, Ordering::SeqCst);
        before
    });
    // The load stopped; a follow round takes what the log gained since: then every decision
    // answered, not only those before the backup, must come back.
    let all = answered.lock().unwrap().clone();
    ok(
        bundle(
            &[
                "backup",
                "follow",
                "--gateway",
                &gw.url,
                "--dir",
                "backup",
                "--key",
                "k.key",
                "--rounds",
                "1",
            ],
            t,
        ),
        "backup follow",
    );
    assert!(all.len() > before.len());
    let backup = t.join("backup");
    the_backup_checks_with_stock_tools(&backup, t);
    destroy(gw, &t.join("site"), &t.join("key-backup"));
    refusals(t);
    let restored = restore_offline(t);
    put_keys_back(&t.join("key-backup"), &restored);
    let gw = site(&restored);
    the_restored_log_holds_what_was_answered_and_says_it_was_restored(&gw, &backup, &all);
    gos_tlog_proves_it_consistent_with_the_backup(&gw, &backup, t);
    assert_eq!(
        gw.check(&token, "read:after-restore"),
        200,
        "decisions go on"
    );
    assert_eq!(
        logged_actions(&gw).last().map(String::as_str),
        Some("read:after-restore")
    );
}

/// The backup signing key (`meshguard-bundle keys generate`).
fn keys(t: &Path) {
    ok(
        bundle(
            &["keys", "generate", "--secret", "k.key", "--public", "k.pub"],
            t,
        ),
        "keys generate",
    );
}

/// An age identity of the site's (`age-keygen`); its recipient.
fn age_identity(t: &Path) -> String {
    let out = Command::new("age-keygen")
        .args(["-o", "site.age"])
        .current_dir(t)
        .output()
        .expect("age-keygen (Debian's age) is installed");
    assert!(out.status.success());
    let text = std::fs::read_to_string(t.join("site.age")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned()
}

fn policy(gw: &Gateway) {
    let (s, body) = gw.admin(
        reqwest::Method::POST,
        "/admin/policies",
        Some(json!({"name": "reads", "content": "name: reads\nrules:\n  - name: r\n    effect: allow\n    actions: [\"read:*\"]\n"})),
    );
    assert_eq!(s, 201, "{body}");
}

/// Decisions, each a new action, until told to stop; records the answered ones.
fn decide(gw: &Gateway, token: &str, answered: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let action = format!("read:item-{n}");
        assert_eq!(gw.check(token, &action), 200, "{action}");
        answered.lock().unwrap().push(action);
        n += 1;
    }
}

/// `sha256sum -c` and `minisign -V` check the backup as they check media.
fn the_backup_checks_with_stock_tools(backup: &Path, t: &Path) {
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(backup)
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let sig = Command::new("minisign")
        .args(["-Vm", "SHA256SUMS", "-p"])
        .arg(t.join("k.pub"))
        .current_dir(backup)
        .output()
        .unwrap();
    assert!(
        sig.status.success(),
        "{}",
        String::from_utf8_lossy(&sig.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("BACKUP.json")).unwrap()).unwrap();
    assert_eq!(manifest["database"]["encrypted"], true, "{manifest}");
    assert!(
        !backup.join("database.sqlite").exists(),
        "no clear copy beside the encrypted one"
    );
    for key in KEY_FILES {
        assert!(
            !std::fs::read_dir(backup)
                .unwrap()
                .any(|e| e.unwrap().file_name() == key),
            "{key} is not in the backup"
        );
    }
}

/// The site is lost: its gateway killed, its data directory gone. Its key files survive in the
/// site's key backup, kept apart from the database's.
fn destroy(gw: Gateway, dir: &Path, key_backup: &Path) {
    std::fs::create_dir_all(key_backup).unwrap();
    for key in KEY_FILES {
        std::fs::copy(dir.join(key), key_backup.join(key)).unwrap();
    }
    drop(gw);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tampered backup, another signer's key and an occupied target are refused, naming why,
/// and write nothing.
fn refusals(t: &Path) {
    let tampered = t.join("tampered");
    meshguard_testkit::copy_dir(&t.join("backup"), &tampered);
    let db = tampered.join("database.sqlite.age");
    let mut bytes = std::fs::read(&db).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&db, bytes).unwrap();
    let err = fails(
        bundle(
            &[
                "restore",
                "tampered",
                "--pubkey",
                "k.pub",
                "--data",
                "nowhere",
                "--identity",
                "site.age",
            ],
            t,
        ),
        "restore of a tampered backup",
    );
    assert!(
        err.contains("database.sqlite.age does not match SHA256SUMS"),
        "{err}"
    );
    ok(
        bundle(
            &[
                "keys",
                "generate",
                "--secret",
                "other.key",
                "--public",
                "other.pub",
            ],
            t,
        ),
        "keys",
    );
    let err = fails(
        bundle(
            &[
                "restore",
                "backup",
                "--pubkey",
                "other.pub",
                "--data",
                "nowhere",
                "--identity",
                "site.age",
            ],
            t,
        ),
        "restore with another key",
    );
    assert!(err.contains("not by the trusted key"), "{err}");
    let err = fails(
        bundle(
            &[
                "restore", "backup", "--pubkey", "k.pub", "--data", "nowhere",
            ],
            t,
        ),
        "restore without the age identity",
    );
    assert!(err.contains("--identity"), "{err}");
    assert!(
        !t.join("nowhere").exists(),
        "a refused restore writes nothing"
    );
    std::fs::create_dir_all(t.join("occupied")).unwrap();
    std::fs::write(t.join("occupied/meshguard.db"), b"a site's database").unwrap();
    let err = fails(
        bundle(
            &[
                "restore",
                "backup",
                "--pubkey",
                "k.pub",
                "--data",
                "occupied",
                "--identity",
                "site.age",
            ],
            t,
        ),
        "restore over a database",
    );
    assert!(err.contains("empty data directory"), "{err}");
}

/// `restore backup` into `data`, checked with `k.pub`, the database decrypted with `site.age`.
fn restore_args(data: &str) -> [&str; 8] {
    [
        "restore",
        "backup",
        "--pubkey",
        "k.pub",
        "--data",
        data,
        "--identity",
        "site.age",
    ]
}

/// `meshguard-bundle restore` inside a network namespace of its own (no network at all).
fn restore_offline(t: &Path) -> PathBuf {
    let out = Command::new("unshare")
        .arg("-n")
        .arg(bins(&["meshguard-bundle"]).join("meshguard-bundle"))
        .args(restore_args("restored"))
        .current_dir(t)
        .env("MESHGUARD_BUNDLE_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    let said = ok(out, "restore under unshare -n");
    assert!(
        said.contains("audit-log.key"),
        "the restore names the keys to put back: {said}"
    );
    t.join("restored")
}

fn put_keys_back(key_backup: &Path, dir: &Path) {
    for key in KEY_FILES {
        std::fs::copy(key_backup.join(key), dir.join(key)).unwrap();
    }
}

/// The restored log verifies; it holds every decision answered before the backup, in order,
/// then the restore's own entry, which names the backup and its size; the gateway's checkpoints
/// signed before the disaster are its checkpoints still.
fn the_restored_log_holds_what_was_answered_and_says_it_was_restored(
    gw: &Gateway,
    backup: &Path,
    before: &[String],
) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("BACKUP.json")).unwrap()).unwrap();
    let size = manifest["audit"]["size"].as_u64().unwrap();
    let verify = gw.get("/admin/audit/verify");
    assert_eq!(verify["valid"], true, "{verify}");
    assert!(
        verify["latestCheckpointSize"].as_u64() >= Some(size),
        "{verify}"
    );
    let actions = logged_actions(gw);
    let decided: Vec<&String> = actions
        .iter()
        .filter(|a| a.starts_with("read:item-"))
        .collect();
    assert!(
        decided.len() >= before.len(),
        "{} decisions in the restored log, {} answered before the backup",
        decided.len(),
        before.len()
    );
    assert_eq!(
        &decided[..before.len()],
        &before.iter().collect::<Vec<_>>()[..]
    );
    let (status, body) = gw.admin(
        reqwest::Method::GET,
        &format!("/admin/audit/export?after={size}&limit=1"),
        None,
    );
    assert_eq!(status, 200);
    let line: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(
        line["seq"],
        size + 1,
        "the restore is the entry after the backup's last"
    );
    assert_eq!(line["entry"]["event"], "restore", "{line}");
    let reason = line["entry"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("restored from backup backup")
            && reason.contains(&format!("entries 1 to {size} restored")),
        "{reason}"
    );
}

/// Go's sumdb/tlog (not our code) reads the restored gateway's tiles, checks every entry and
/// proves the log consistent with the checkpoint the backup holds.
fn gos_tlog_proves_it_consistent_with_the_backup(gw: &Gateway, backup: &Path, t: &Path) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(backup.join("BACKUP.json")).unwrap()).unwrap();
    let size = manifest["audit"]["size"].as_u64().unwrap();
    let old = backup.join(format!("audit/checkpoints/{size}.note"));
    let (_, vkey) = gw.checkpoint();
    let out = Command::new(meshguard_testkit::tlogcheck(t))
        .args(["-url", &gw.url, "-vkey", &vkey, "-token", ADMIN, "-old"])
        .arg(&old)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tlogcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The largest size of this log the gateway holds a cosignature of from `witness`.
fn cosigned(gw: &Gateway, witness: &str) -> u64 {
    gw.get("/admin/audit/cosignatures")["cosignatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["witness"] == witness)
        .filter_map(|c| c["size"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A site witness, initialised and served, and the gateways that name it.
struct SiteWitness {
    cli: support::WitnessCli,
    vkey: String,
    served: support::ServedWitness,
}

const WITNESS: &str = "witness.site.example/w1";

impl SiteWitness {
    fn start() -> Self {
        let cli = support::WitnessCli {
            dir: tempfile::tempdir().unwrap(),
        };
        let (code, vkey, err) = cli.run(&["init", "--name", WITNESS]);
        assert_eq!(code, 0, "{err}");
        let served = cli.serve(meshguard_testkit::free_port());
        Self {
            cli,
            vkey: vkey.trim().to_owned(),
            served,
        }
    }

    /// A gateway of the site on `dir`, its checkpoints sent to this witness.
    fn gateway(&self, dir: &Path) -> Gateway {
        Gateway::spawn(
            dir,
            &[
                ("AUDIT_ORIGIN", ORIGIN.into()),
                ("RATE_LIMIT_RPM", "0".into()),
                ("POLICIES_DIR", dir.join("policies").into()),
                ("AUDIT_WITNESSES", self.vkey.clone().into()),
                (
                    "AUDIT_WITNESS_URLS",
                    format!("{WITNESS}={}", self.served.url).into(),
                ),
            ],
        )
    }
}

/// A restore that ends before what a connected witness cosigned rewrites history: the restored
/// gateway refuses to start, naming the gap and the flag; restored again with the gap named
/// lost, it starts and its restore entry records the range and what the witness said.
#[test]
fn a_restore_behind_what_a_witness_cosigned_starts_only_with_the_gap_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    keys(t);
    let witness = SiteWitness::start();
    let (size, later) = a_site_witnessed_past_its_backup(t, &witness);
    ok(
        bundle(
            &[
                "restore", "backup", "--pubkey", "k.pub", "--data", "unnamed",
            ],
            t,
        ),
        "restore",
    );
    put_keys_back(&t.join("key-backup"), &t.join("unnamed"));
    let refused = refused_start(&t.join("unnamed"), &witness);
    assert!(
        refused.contains(&format!("cosigned this log up to size {later}"))
            && refused.contains(&format!("--lost {size}..{later}")),
        "{refused}"
    );
    let lost = format!("{size}..{later}");
    ok(
        bundle(
            &[
                "restore", "backup", "--pubkey", "k.pub", "--data", "named", "--lost", &lost,
            ],
            t,
        ),
        "restore with the gap named",
    );
    put_keys_back(&t.join("key-backup"), &t.join("named"));
    let gw = witness.gateway(&t.join("named"));
    the_restore_entry_names_the_gap(&gw, size, later);
}

/// A site whose witness cosigns its log, backed up, then grown and cosigned past the backup,
/// then lost (its keys kept). Returns the backup's size and the size the witness cosigned.
fn a_site_witnessed_past_its_backup(t: &Path, witness: &SiteWitness) -> (u64, u64) {
    let gw = witness.gateway(&t.join("site"));
    policy(&gw);
    let token = gw.agent("clerk", "verified");
    let decide = |n: usize| {
        for i in 0..n {
            assert_eq!(gw.check(&token, &format!("read:w{i}")), 200);
        }
    };
    decide(5);
    let (_, log_vkey) = gw.checkpoint();
    let (code, _, err) = witness.cli.run(&["trust", &log_vkey]);
    assert_eq!(code, 0, "{err}");
    ok(
        bundle(
            &[
                "backup",
                "take",
                "--gateway",
                &gw.url,
                "--out",
                "backup",
                "--key",
                "k.key",
            ],
            t,
        ),
        "backup take",
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(t.join("backup/BACKUP.json")).unwrap()).unwrap();
    let size = manifest["audit"]["size"].as_u64().unwrap();
    decide(7);
    let (note, _) = gw.checkpoint();
    let later: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    meshguard_testkit::wait_for("the witness to cosign past the backup", || {
        cosigned(&gw, WITNESS) >= later
    });
    assert!(later > size);
    destroy(gw, &t.join("site"), &t.join("key-backup"));
    (size, later)
}

/// The restore entry follows the backup's last entry, records the lost range and what the
/// witness said.
fn the_restore_entry_names_the_gap(gw: &Gateway, size: u64, later: u64) {
    let (status, body) = gw.admin(
        reqwest::Method::GET,
        &format!("/admin/audit/export?after={size}&limit=1"),
        None,
    );
    assert_eq!(status, 200);
    let line: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    let entry = &line["entry"];
    assert_eq!(entry["event"], "restore", "{line}");
    assert_eq!(
        entry["meta"]["lost"],
        json!({"from": size, "to": later}),
        "{entry}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("entries {} to {later}", size + 1)),
        "{entry}"
    );
    assert_eq!(
        entry["meta"]["witnesses"][0],
        format!("{WITNESS}: cosigned size {later}, named lost"),
        "{entry}"
    );
}

/// Starts the gateway on `dir`, expecting it to stop before it listens; its log.
fn refused_start(dir: &Path, witness: &SiteWitness) -> String {
    let out = Command::new(bins(&["meshguard-gateway"]).join("meshguard-gateway"))
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("ADMIN_TOKEN", ADMIN)
        .env("JWT_SECRET", "e2e-jwt-secret-0123456789abcdef0123456")
        .env("DB_PATH", dir.join("meshguard.db"))
        .env("POLICIES_DIR", dir.join("policies"))
        .env("AUDIT_ORIGIN", ORIGIN)
        .env("AUDIT_WITNESSES", &witness.vkey)
        .env(
            "AUDIT_WITNESS_URLS",
            format!("{WITNESS}={}", witness.served.url),
        )
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the gateway started on a log behind its witness"
    );
    assert!(
        dir.join("restored.json").exists(),
        "the refused restore is still to be recorded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
