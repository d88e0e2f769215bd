//! The audit checkpoint key: refused when missing, different or readable by others; replaced
//! only by a rotation the log records, after which old and new checkpoints all verify. The
//! steps follow docs/keys.md.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::harness::{Gateway, Options, agent, command, policy, tempdir};

/// Runs the gateway once with `args` (a command that exits); returns (exit code, stdout, stderr).
fn run_once(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let opts = Options {
        args: args.to_vec(),
        ..Options::default()
    };
    let out = command(dir, &opts).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Decisions, then a signed checkpoint over them: (checkpoint note, verifier key).
fn decide_and_sign(gw: &Gateway, token: &str, n: usize) -> (String, String) {
    for i in 0..n {
        assert_eq!(gw.check(token, &format!("read:doc{i}")).0, 200);
    }
    let (status, cp) = gw.post("/admin/audit/checkpoint", json!({}));
    assert_eq!(status, 200, "{cp}");
    (
        cp["checkpoint"].as_str().unwrap().to_owned(),
        cp["vkey"].as_str().unwrap().to_owned(),
    )
}

fn assert_log_verifies(gw: &Gateway, checkpoints: usize) {
    let (status, report) = gw.get("/admin/audit/verify");
    assert_eq!(status, 200);
    assert_eq!(report["valid"], json!(true), "{report}");
    assert_eq!(report["checkpoints"], json!(checkpoints), "{report}");
}

fn signature_lines(note: &str) -> usize {
    note.lines().filter(|l| l.starts_with('\u{2014}')).count()
}

#[test]
fn the_audit_key_is_refused_when_missing_or_exposed_and_replaced_only_by_a_recorded_rotation() {
    let dir = tempdir();
    let key = dir.path().join("data/audit-log.key");
    let gw = Gateway::start(dir.path());
    let (_, token) = agent(&gw, "clerk", "verified", &[]);
    policy(
        &gw,
        "read",
        "name: read\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (first_note, first_vkey) = decide_and_sign(&gw, &token, 3);
    // Exported policy bundles are signed by a key of their own, not the audit key.
    let (status, bundle) = gw.get("/admin/policies/bundle");
    assert_eq!(status, 200, "{bundle}");
    let bundle_key = std::fs::read_to_string(dir.path().join("data/policy-bundle.key")).unwrap();
    assert!(bundle_key.starts_with("PRIVATE+KEY+policy-bundles+"));
    assert_ne!(bundle_key, std::fs::read_to_string(&key).unwrap());
    drop(gw);

    a_readable_missing_or_other_key_stops_the_start(dir.path(), &key, &first_vkey);
    // Rotation, with the gateway stopped: the old key signs the handoff too.
    let (code, out, err) = run_once(dir.path(), &["--rotate-audit-key"]);
    assert_eq!(code, Some(0), "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated["oldVkey"], json!(first_vkey));
    assert_eq!(rotated["oldKeySigned"], json!(true));
    let second_vkey = rotated["newVkey"].as_str().unwrap().to_owned();
    assert_ne!(second_vkey, first_vkey);
    assert_eq!(signature_lines(rotated["checkpoint"].as_str().unwrap()), 2);
    assert!(!dir.path().join("data/audit-log.key.next").exists());

    let gw = Gateway::start(dir.path());
    let (status, keys) = gw.get("/admin/audit/keys");
    assert_eq!(status, 200);
    assert_eq!(keys["current"], json!(second_vkey));
    let handoff = rotated["size"].as_u64().unwrap();
    assert_eq!(
        keys["keys"],
        json!([
            {"vkey": first_vkey, "firstSize": 0, "retiredSize": handoff},
            {"vkey": second_vkey, "firstSize": handoff},
        ])
    );
    // The rotation is an entry of the log.
    let (_, listed) = gw.get("/admin/audit?limit=50");
    let entries = listed["entries"].as_array().unwrap();
    let rotation = entries
        .iter()
        .find(|e| e["event"] == json!("key_rotation"))
        .unwrap_or_else(|| panic!("no key_rotation entry in {listed}"));
    assert_eq!(rotation["meta"]["newVkey"], json!(second_vkey));
    // Tokens and policies are untouched; new checkpoints use the new key, old ones still verify.
    let (note, vkey) = decide_and_sign(&gw, &token, 2);
    assert_eq!(vkey, second_vkey);
    assert_ne!(note, first_note);
    assert_log_verifies(&gw, 3);
    drop(gw);

    // A key lost for good: the rotation says so, and only the new key signs the handoff.
    std::fs::remove_file(&key).unwrap();
    let (code, out, err) = run_once(dir.path(), &["--rotate-audit-key", "--audit-key-lost"]);
    assert_eq!(code, Some(0), "{err}");
    let lost: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(lost["oldVkey"], json!(second_vkey));
    assert_eq!(lost["oldKeySigned"], json!(false));
    assert_eq!(signature_lines(lost["checkpoint"].as_str().unwrap()), 1);
    let gw = Gateway::start(dir.path());
    let (_, vkey) = decide_and_sign(&gw, &token, 1);
    assert_eq!(vkey, lost["newVkey"].as_str().unwrap());
    assert_log_verifies(&gw, 5);
}

/// Step 1 of docs/keys.md: the key file is readable by its owner only. A missing key is not
/// silently replaced: the start stops and says what to do; nor is another key accepted in its
/// place.
fn a_readable_missing_or_other_key_stops_the_start(dir: &Path, key: &Path, first_vkey: &str) {
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run_once(dir, &[]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("can be read by other users") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A missing key is not silently replaced: the start stops and says what to do.
    let kept = dir.join("audit-log.key.backup");
    std::fs::rename(key, &kept).unwrap();
    let (code, _, err) = run_once(dir, &[]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("is missing") && err.contains("restore") && err.contains("--rotate-audit-key"),
        "{err}"
    );
    assert!(!key.exists(), "no new key was made");
    // Nor is another key accepted in its place.
    let other = tempdir();
    drop(Gateway::start(other.path()));
    std::fs::copy(other.path().join("data/audit-log.key"), key).unwrap();
    let (code, _, err) = run_once(dir, &[]);
    assert_ne!(code, Some(0));
    let first_id = first_vkey.split('+').nth(1).unwrap();
    assert!(
        err.contains("are signed by key") && err.contains(first_id),
        "{err}"
    );
    std::fs::rename(&kept, key).unwrap();
}

#[test]
fn a_lost_key_rotation_is_refused_while_the_key_is_there() {
    let dir = tempdir();
    drop(Gateway::start(dir.path()));
    let (code, _, err) = run_once(dir.path(), &["--rotate-audit-key", "--audit-key-lost"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("holds this log's current key") && err.contains("without --audit-key-lost"),
        "{err}"
    );
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "472913";

/// A SoftHSM2 token of its own (its config and token directory under `dir`) holding Ed25519
/// key pairs with the given labels, made by OpenSC's `pkcs11-tool` as a site would make them.
fn softhsm_token(dir: &Path, labels: &[&str]) -> (String, std::path::PathBuf) {
    softhsm_token_with_aes(dir, labels, &[])
}

/// [`softhsm_token`], with AES-256 secret keys labelled `aes` besides.
fn softhsm_token_with_aes(
    dir: &Path,
    labels: &[&str],
    aes: &[&str],
) -> (String, std::path::PathBuf) {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is not installed (apt softhsm2 opensc; `cargo xtask test` installs it)"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .env("SOFTHSM2_CONF", &conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} runs: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "meshguard",
            "--so-pin",
            "83726451",
            "--pin",
            PIN,
        ],
    );
    let pkcs11_tool = |make: &[&str]| {
        let login = [
            "--module",
            MODULE,
            "--token-label",
            "meshguard",
            "--login",
            "--pin",
            PIN,
        ];
        run("pkcs11-tool", &[login.as_slice(), make].concat());
    };
    for (i, label) in labels.iter().enumerate() {
        let id = format!("{:02x}", i + 1);
        pkcs11_tool(&[
            "--keypairgen",
            "--key-type",
            "EC:edwards25519",
            "--label",
            label,
            "--id",
            &id,
        ]);
    }
    for label in aes {
        pkcs11_tool(&[
            "--keygen",
            "--key-type",
            "AES:32",
            "--sensitive",
            "--label",
            label,
        ]);
    }
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (conf.display().to_string(), pin_file)
}

fn token_uri(object: &str, pin_file: &Path) -> String {
    format!(
        "pkcs11:token=meshguard;object={object}?module-path={MODULE}&pin-source={}",
        pin_file.display()
    )
}

#[test]
fn the_audit_key_moves_into_a_pkcs11_token_and_keeps_signing_from_there() {
    let dir = tempdir();
    let hsm = tempdir();
    let (conf, pin_file) = softhsm_token(hsm.path(), &["audit-2", "bundles"]);
    let with_hsm = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![("SOFTHSM2_CONF", conf.clone())];
        env.extend(extra);
        Options::with(env)
    };
    let gw = Gateway::start_with(dir.path(), with_hsm(vec![]));
    let (_, token) = agent(&gw, "clerk", "verified", &[]);
    policy(
        &gw,
        "read",
        "name: read\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (_, file_vkey) = decide_and_sign(&gw, &token, 2);
    drop(gw);

    // Rotate from the key file into the token: the file key signs the handoff too.
    let uri = token_uri("audit-2", &pin_file);
    let mut opts = with_hsm(vec![]);
    opts.args = vec!["--rotate-audit-key", "--new-audit-key-uri", &uri];
    let out = command(dir.path(), &opts).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(PIN) && !stderr.contains(PIN),
        "the PIN is never printed"
    );
    let rotated: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rotated["oldVkey"], json!(file_vkey));
    assert_eq!(rotated["oldKeySigned"], json!(true));
    assert!(
        rotated["nextStep"]
            .as_str()
            .unwrap()
            .contains("AUDIT_KEY_URI")
    );
    let token_vkey = rotated["newVkey"].as_str().unwrap().to_owned();

    // Started with the old key file, the gateway refuses: the log is signed by the token key.
    let out = command(dir.path(), &with_hsm(vec![])).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("are signed by key"), "{stderr}");

    // With the token key (and the bundle key in the token too) it signs from the token.
    let gw = Gateway::start_with(
        dir.path(),
        with_hsm(vec![
            ("AUDIT_KEY_URI", uri.clone()),
            ("POLICY_BUNDLE_KEY_URI", token_uri("bundles", &pin_file)),
        ]),
    );
    let (_, vkey) = decide_and_sign(&gw, &token, 3);
    assert_eq!(vkey, token_vkey);
    assert_log_verifies(&gw, 3);
    // A bundle signed in the token verifies with the stock minisign.
    let (status, bundle) = gw.get("/admin/policies/bundle");
    assert_eq!(status, 200, "{bundle}");
    let b = hsm.path();
    std::fs::write(
        b.join("policy-bundle.json"),
        bundle["bundle"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(
        b.join("policy-bundle.json.minisig"),
        bundle["minisig"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(b.join("bundle.pub"), bundle["publicKey"].as_str().unwrap()).unwrap();
    let out = std::process::Command::new("minisign")
        .current_dir(b)
        .args(["-V", "-p", "bundle.pub", "-m", "policy-bundle.json"])
        .output()
        .expect("minisign (apt minisign) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(gw);

    // A wrong PIN is named as such, without the PIN.
    std::fs::write(&pin_file, "000000\n").unwrap();
    let out = command(dir.path(), &with_hsm(vec![("AUDIT_KEY_URI", uri)]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("check the PIN") && !stderr.contains("000000"),
        "{stderr}"
    );
}

/// The stored bodies of the alert channels, as the database holds them.
fn channel_bodies(dir: &Path) -> String {
    let db = rusqlite::Connection::open(dir.join("data/meshguard.db")).unwrap();
    let mut stmt = db.prepare("SELECT body FROM alert_channels").unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.join("\n")
}

#[test]
fn alert_channel_secrets_move_from_the_key_file_into_a_pkcs11_token() {
    let dir = tempdir();
    let hsm = tempdir();
    let (conf, pin_file) = softhsm_token_with_aes(hsm.path(), &[], &["secrets"]);
    let uri = token_uri("secrets", &pin_file);
    let hsm_env = |uri: Option<&str>| {
        let mut env = vec![("SOFTHSM2_CONF", conf.clone())];
        env.extend(uri.map(|u| ("SECRETS_KEY_URI", u.to_owned())));
        Options::with(env)
    };
    let channel = |gw: &Gateway, secret: &str| {
        let (status, created) = gw.post(
            "/admin/alert-channels",
            json!({"type": "webhook", "endpoint": "https://hooks.example.com/mg",
                   "severity": "critical", "triggers": ["deny"], "webhook_secret": secret}),
        );
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    };

    // Under the key file, as every site starts.
    let gw = Gateway::start_with(dir.path(), hsm_env(None));
    let first = channel(&gw, "whsec-sealed-under-the-file-key");
    drop(gw);
    assert!(channel_bodies(dir.path()).contains("mgsecret1:"));

    // The first start with SECRETS_KEY_URI moves it into the token (the file is still there).
    let gw = Gateway::start_with(dir.path(), hsm_env(Some(&uri)));
    let (status, got) = gw.get(&format!("/admin/alert-channels/{first}"));
    assert_eq!(status, 200, "the moved secret opens: {got}");
    assert_eq!(got["webhookSecretSet"], json!(true));
    let second = channel(&gw, "whsec-sealed-in-the-token");
    drop(gw);
    let bodies = channel_bodies(dir.path());
    assert!(
        !bodies.contains("mgsecret1:"),
        "nothing is left under the file key: {bodies}"
    );
    assert_eq!(bodies.matches("mgsecret2:").count(), 2, "{bodies}");
    assert!(
        !bodies.contains("whsec-"),
        "no secret is stored in clear: {bodies}"
    );
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gateway-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(!log.contains(PIN), "the PIN is never logged");

    // The key file is no longer needed; without the token the secrets cannot be opened.
    std::fs::remove_file(dir.path().join("data/secrets.key")).unwrap();
    let gw = Gateway::start_with(dir.path(), hsm_env(Some(&uri)));
    assert_eq!(gw.get(&format!("/admin/alert-channels/{second}")).0, 200);
    drop(gw);
    let out = command(dir.path(), &hsm_env(None)).output().unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("sealed with key"), "{why}");
}
