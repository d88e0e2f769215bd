//! `/admin/policies`: byte-exact content, both rule dialects, validation, test, file policies.

use reqwest::Method;
use serde_json::json;

use crate::harness::{Gateway, Options, agent, json, policy, tempdir};
use meshguard_testkit::wait_for;

/// Comments, odd spacing, a trailing space, CRLF-free unicode and no final newline: all must
/// come back exactly.
const QUIRKY: &str = "# production guardrails\nname:   guard   \nversion: \"1.0\"\ndescription: Garde-fous — prod ✓\nrules:\n  - name: allow-read   # reads are fine\n    effect: allow\n    actions:\n      - \"read:*\"\n\n  - name: deny-admin\n    effect: deny\n    actions: [\"admin:*\"]\n    reason: admin actions need a human\ndefaultEffect: deny";

#[test]
fn content_round_trips_byte_for_byte_by_id_and_by_name() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, created) = gw.post(
        "/admin/policies",
        json!({"name": "guard", "content": QUIRKY}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("policy_"));
    assert_eq!(created["content"], QUIRKY);
    for key in [id, "guard"] {
        let (status, got) = gw.get(&format!("/admin/policies/{key}"));
        assert_eq!(status, 200);
        assert_eq!(
            got["content"].as_str().unwrap().as_bytes(),
            QUIRKY.as_bytes()
        );
        assert_eq!(got["version"], "1.0");
        assert_eq!(got["rules"][1]["id"], "deny-admin");
        assert_eq!(got["rules"][1]["action"], "admin:*");
        assert_eq!(got["readOnly"], false);
    }
    let (_, list) = gw.get("/admin/policies");
    assert_eq!(list["policies"][0]["content"], QUIRKY);
}

#[test]
fn yaml_bodies_and_json_policy_objects_are_accepted() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let yaml = "name: from-yaml\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    let (status, body) = json(
        gw.admin(Method::POST, "/admin/policies")
            .header("Content-Type", "application/yaml")
            .body(yaml)
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, body["name"].as_str(), body["content"].as_str()),
        (201, Some("from-yaml"), Some(yaml))
    );
    let (status, body) = gw.post(
        "/admin/policies",
        json!({"name": "from-json", "rules": [{"name": "r", "effect": "deny", "actions": ["delete:*"]}], "defaultEffect": "allow"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["defaultEffect"], "allow");
    assert_eq!(body["rules"][0]["effect"], "deny");
}

#[test]
fn terraform_yamlencode_policy_is_accepted_and_enforced() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    // What Terraform's yamlencode() makes of the complete example on MeshGuard's Terraform page.
    let content = "\"appliesTo\":\n- \"code-reviewer\"\n\"defaultEffect\": \"deny\"\n\"description\": \"Policy for code review agents\"\n\"name\": \"code-review-policy\"\n\"rules\":\n- \"conditions\":\n    \"action\":\n    - \"read\"\n    \"path\":\n    - \"/api/repos/*\"\n  \"effect\": \"allow\"\n  \"name\": \"allow-read-repos\"\n- \"conditions\":\n    \"action\":\n    - \"write\"\n    \"path\":\n    - \"/api/repos/*/comments\"\n  \"effect\": \"allow\"\n  \"name\": \"allow-post-comments\"\n\"version\": \"1.0\"\n";
    policy(&gw, "code-review-policy", content);
    let (_, token) = agent(&gw, "code-reviewer", "verified", &["ci"]);
    let (status, body) = gw.check(&token, "read:api/repos/meshguard");
    assert_eq!(
        (status, body["rule"].as_str()),
        (200, Some("allow-read-repos")),
        "{body}"
    );
    assert_eq!(gw.check(&token, "write:api/repos/x/comments").0, 200);
    let (status, body) = gw.check(&token, "delete:api/repos/x");
    assert_eq!(
        (status, body["policy"].as_str(), body["decision"].as_str()),
        (403, Some("code-review-policy"), Some("deny"))
    );
    let (_, other) = agent(&gw, "someone-else", "verified", &[]);
    let (status, body) = gw.check(&other, "read:api/repos/x");
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("No policy applies to this agent"))
    );
    assert!(body.get("policy").is_none());
}

#[test]
fn invalid_policies_fail_with_field_and_line_and_nothing_is_stored() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let bad = "name: bad\nrules:\n  - name: r\n    effect: permit\n    actions: [\"read:*\"]\n";
    let (status, body) = gw.post("/admin/policies", json!({"name": "bad", "content": bad}));
    assert_eq!(status, 400);
    assert_eq!(
        (body["error"].as_str(), body["line"].as_u64()),
        (Some("invalid_policy"), Some(4))
    );
    assert_eq!(body["field"], "content.rules[0].effect");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("expected allow, deny or require_approval"),
        "{body}"
    );

    let (status, body) = gw.post(
        "/admin/policies",
        json!({"name": "x", "content": "name: x\nrules: [\n"}),
    );
    assert_eq!(status, 400);
    assert!(
        body["line"].is_u64() && body["message"].as_str().unwrap().contains("invalid YAML"),
        "{body}"
    );

    let (status, body) = gw.post("/admin/policies", json!({"name": "other", "content": "name: inner\nrules:\n  - effect: allow\n    actions: [a]\n"}));
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("name")),
        "{body}"
    );
    assert_eq!(gw.get("/admin/policies").1["policies"], json!([]));
}

#[test]
fn validate_reports_errors_and_warnings_without_storing() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (status, body) = gw.post(
        "/admin/policies/validate",
        json!({"name": "v", "rules": [{"effect": "allow", "actions": ["*"], "conditions": {"amount_max": 100}}]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], true);
    let warned: Vec<&str> = body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert!(warned.contains(&"rules[0].conditions.amount_max"), "{body}");

    let (status, body) = gw.post(
        "/admin/policies/validate",
        json!({"content": "name: v\nrules:\n  - effect: allow\n"}),
    );
    assert_eq!((status, body["valid"].as_bool()), (400, Some(false)));
    assert_eq!(body["errors"][0]["path"], "rules[0]");
    assert_eq!(body["errors"][0]["line"], 3);
    assert_eq!(gw.get("/admin/policies").1["policies"], json!([]));
}

#[test]
fn test_endpoint_decides_like_the_github_action_expects() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let doc =
        json!({"name": "t", "rules": [{"name": "ok", "effect": "allow", "actions": ["read:*"]}]});
    let (status, body) = gw.post(
        "/admin/policies/test",
        json!({"policy": doc, "agentId": "agent-1", "action": "read:x"}),
    );
    assert_eq!(
        (status, body["decision"].as_str(), body["rule"].as_str()),
        (200, Some("allow"), Some("ok"))
    );
    let (_, body) = gw.post(
        "/admin/policies/test",
        json!({"policy": doc, "agentId": "agent-1", "action": "write:x"}),
    );
    assert_eq!(body["decision"], "deny");
    // Without a policy it tests the active set, with the stored agent's tier.
    policy(
        &gw,
        "tiers",
        "name: tiers\nappliesTo:\n  trustTiers: [privileged]\nrules:\n  - effect: allow\n    actions: [\"*\"]\n",
    );
    let (id, _) = agent(&gw, "p", "privileged", &[]);
    let (_, body) = gw.post(
        "/admin/policies/test",
        json!({"agentId": id, "action": "admin:rotate"}),
    );
    assert_eq!(body["decision"], "allow", "{body}");
    let (status, body) = gw.post("/admin/policies/test", json!({"agentId": id}));
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("action")),
        "{body}"
    );
}

#[test]
fn update_rename_and_delete_take_effect_for_decisions() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let id = policy(
        &gw,
        "p",
        "name: p\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (_, token) = agent(&gw, "a", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);
    let denied = "name: p\nrules:\n  - effect: deny\n    actions: [\"read:*\"]\n";
    let (status, body) = gw.put(
        &format!("/admin/policies/{id}"),
        json!({"name": "p", "content": denied}),
    );
    assert_eq!(
        (status, body["revision"].as_i64()),
        (200, Some(2)),
        "{body}"
    );
    assert_eq!(gw.check(&token, "read:x").0, 403);
    let (status, body) = gw.patch(
        "/admin/policies/p",
        json!({"name": "q", "content": "rules:\n  - effect: allow\n    actions: [\"*\"]\n"}),
    );
    assert_eq!(
        (status, body["name"].as_str(), body["id"].as_str()),
        (200, Some("q"), Some(id.as_str())),
        "{body}"
    );
    assert_eq!(gw.get("/admin/policies/p").0, 404);
    let (status, body) = gw.delete("/admin/policies/q");
    assert_eq!((status, body["status"].as_str()), (200, Some("deleted")));
    assert_eq!(gw.get(&format!("/admin/policies/{id}")).0, 404);
    assert_eq!(gw.check(&token, "read:x").0, 403);
    assert_eq!(gw.delete("/admin/policies/q").0, 404);
    assert_eq!(
        gw.put("/admin/policies/nope", json!({"content": denied})).0,
        404
    );
}

#[test]
fn duplicate_names_conflict() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    policy(
        &gw,
        "p",
        "name: p\nrules:\n  - effect: allow\n    actions: [a]\n",
    );
    let (status, body) = gw.post(
        "/admin/policies",
        json!({"name": "p", "content": "rules:\n  - effect: allow\n    actions: [a]\n"}),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already exists"));
}

#[test]
fn file_policies_are_active_and_read_only() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    let file_yaml =
        "name: from-file\nrules:\n  - name: reads\n    effect: allow\n    actions: [\"read:*\"]\n";
    std::fs::write(dir.path().join("policies/a.yaml"), file_yaml).unwrap();
    std::fs::write(
        dir.path().join("policies/broken.yaml"),
        "name: broken\nrules: [\n",
    )
    .unwrap();
    let gw = Gateway::start(dir.path());
    let (_, list) = gw.get("/admin/policies");
    let names: Vec<&str> = list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["from-file"],
        "the broken file is skipped, not fatal"
    );
    let (status, got) = gw.get("/admin/policies/from-file");
    assert_eq!(
        (status, got["readOnly"].as_bool(), got["source"].as_str()),
        (200, Some(true), Some("file"))
    );
    assert_eq!(got["content"], file_yaml);
    let (_, token) = agent(&gw, "a", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);

    let (status, body) = gw.put("/admin/policies/from-file", json!({"content": file_yaml}));
    assert_eq!(status, 409);
    assert!(
        body["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    assert_eq!(gw.delete("/admin/policies/from-file").0, 409);
    let (status, body) = gw.post(
        "/admin/policies",
        json!({"name": "from-file", "content": "rules:\n  - effect: deny\n    actions: [\"*\"]\n"}),
    );
    assert_eq!(status, 409, "{body}");
}

#[test]
fn policy_files_reload_and_a_broken_file_keeps_its_last_good_version() {
    let dir = tempdir();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let v1 = "name: files\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n";
    std::fs::write(policies.join("a.yaml"), v1).unwrap();
    let gw = Gateway::start_with(
        dir.path(),
        Options::with(vec![("POLICIES_RELOAD_SECONDS", "1".into())]),
    );
    let (_, token) = agent(&gw, "a", "verified", &[]);
    assert_eq!(gw.check(&token, "read:x").0, 200);
    assert_eq!(gw.check(&token, "write:x").0, 403);
    let before_change = chrono_now();
    std::thread::sleep(std::time::Duration::from_millis(20));

    let v2 = "name: files\nrules:\n  - effect: allow\n    actions: [\"read:*\", \"write:*\"]\n";
    std::fs::write(policies.join("a.yaml"), v2).unwrap();
    wait_for("the edited file to take effect", || {
        gw.check(&token, "write:x").0 == 200
    });

    // A broken edit: the last version that parsed stays active.
    std::fs::write(policies.join("a.yaml"), "name: files\nrules: [\n").unwrap();
    std::fs::write(
        policies.join("b.yaml"),
        "name: more\nrules:\n  - effect: allow\n    actions: [\"export:*\"]\n",
    )
    .unwrap();
    wait_for("the new file to take effect", || {
        gw.check(&token, "export:x").0 == 200
    });
    assert_eq!(
        gw.check(&token, "write:x").0,
        200,
        "the broken file's last good version is kept"
    );
    let (_, got) = gw.get("/admin/policies/files");
    assert_eq!(got["content"], v2);

    // Which snapshot was active before the first edit.
    let (status, then) = gw.get(&format!("/admin/policies/versions?at={before_change}"));
    assert_eq!(status, 200, "{then}");
    let digest = then["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "files")
        .unwrap()["digest"]
        .clone();
    assert_eq!(
        digest,
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(v1.as_bytes()))
        )
    );
    let (_, all) = gw.get("/admin/policies/versions");
    assert!(all["versions"].as_array().unwrap().len() >= 3, "{all}");
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn signed_bundles_verify_with_minisign_and_only_verified_ones_load() {
    let source_dir = tempdir();
    let source = Gateway::start(source_dir.path());
    policy(
        &source,
        "reads",
        "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (status, env) = source.get("/admin/policies/bundle");
    assert_eq!(status, 200, "{env}");
    let media = tempdir();
    let (bundle, sig, key) = (
        media.path().join("policy-bundle.json"),
        media.path().join("policy-bundle.json.minisig"),
        media.path().join("gateway.pub"),
    );
    std::fs::write(&bundle, env["bundle"].as_str().unwrap()).unwrap();
    std::fs::write(&sig, env["minisig"].as_str().unwrap()).unwrap();
    std::fs::write(&key, env["publicKey"].as_str().unwrap()).unwrap();

    // The stock minisign tool accepts it.
    let check = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&bundle)
        .arg("-p")
        .arg(&key)
        .output()
        .expect("minisign is installed by cargo xtask test");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let start_with_bundle = |dir: &std::path::Path| {
        Gateway::start_with(
            dir,
            Options::with(vec![
                ("POLICY_BUNDLE", bundle.display().to_string()),
                ("POLICY_BUNDLE_PUBKEY", key.display().to_string()),
            ]),
        )
    };
    let sidecar_dir = tempdir();
    let sidecar = start_with_bundle(sidecar_dir.path());
    let (_, token) = agent(&sidecar, "edge", "verified", &[]);
    assert_eq!(
        sidecar.check(&token, "read:x").0,
        200,
        "the bundle's policy is active"
    );
    let (_, got) = sidecar.get("/admin/policies/reads");
    assert_eq!(
        (got["readOnly"].as_bool(), got["source"].as_str()),
        (Some(true), Some("file"))
    );
    drop(sidecar);

    // One byte changed: minisign refuses it, and so does the gateway (nothing loads: fail closed).
    let mut altered = std::fs::read(&bundle).unwrap();
    let at = altered.iter().position(|b| *b == b'*').unwrap();
    altered[at] = b'?';
    std::fs::write(&bundle, &altered).unwrap();
    let check = std::process::Command::new("minisign")
        .arg("-Vm")
        .arg(&bundle)
        .arg("-p")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let refused_dir = tempdir();
    let refused = start_with_bundle(refused_dir.path());
    let (_, token) = agent(&refused, "edge", "verified", &[]);
    let (status, body) = refused.check(&token, "read:x");
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("No policy applies to this agent"))
    );
    assert_eq!(refused.get("/admin/policies").1["policies"], json!([]));
}

#[test]
fn cosign_style_ecdsa_signatures_are_verified_too() {
    let source_dir = tempdir();
    let source = Gateway::start(source_dir.path());
    policy(
        &source,
        "reads",
        "name: reads\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let bundle_text = source.get("/admin/policies/bundle").1["bundle"]
        .as_str()
        .unwrap()
        .to_owned();
    let media = tempdir();
    let (bundle, sig, key, public) = (
        media.path().join("policy-bundle.json"),
        media.path().join("policy-bundle.json.sig"),
        media.path().join("cosign.key.pem"),
        media.path().join("cosign.pub"),
    );
    std::fs::write(&bundle, &bundle_text).unwrap();
    // A P-256 key pair and a signature made with openssl, as `cosign sign-blob` makes them.
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    run(&[
        "ec",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let der = run(&[
        "dgst",
        "-sha256",
        "-sign",
        key.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    use base64::Engine;
    std::fs::write(&sig, base64::engine::general_purpose::STANDARD.encode(der)).unwrap();

    let start = |dir: &std::path::Path| {
        Gateway::start_with(
            dir,
            Options::with(vec![
                ("POLICY_BUNDLE", bundle.display().to_string()),
                ("POLICY_BUNDLE_PUBKEY", public.display().to_string()),
            ]),
        )
    };
    let ok_dir = tempdir();
    let ok = start(ok_dir.path());
    let (_, token) = agent(&ok, "edge", "verified", &[]);
    assert_eq!(ok.check(&token, "read:x").0, 200);
    drop(ok);

    std::fs::write(&bundle, bundle_text.replace("read:*", "read:?")).unwrap();
    let bad_dir = tempdir();
    let bad = start(bad_dir.path());
    let (_, token) = agent(&bad, "edge", "verified", &[]);
    assert_eq!(
        bad.check(&token, "read:x").1["message"],
        "No policy applies to this agent"
    );
}

#[test]
fn the_policy_bundle_on_offline_media_loads_and_a_changed_one_does_not() {
    use meshguard_bundler::keys::{MediaKey, Passphrase};
    let media = tempdir();
    let pass = Passphrase::new("media-key-passphrase").unwrap();
    let (secret, public) = MediaKey::generate(&pass).unwrap();
    std::fs::write(media.path().join("media.key"), secret).unwrap();
    std::fs::write(media.path().join("media.pub"), public).unwrap();
    let key = MediaKey::load(&media.path().join("media.key"), &pass).unwrap();
    let policies = media.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("reads.yaml"),
        "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n",
    )
    .unwrap();
    // What `meshguard-bundle create` writes to policies/ on the media.
    let bundle =
        meshguard_bundler::create::policy_bundle(&policies, "1.4.0", "2026-11-23T00:00:00Z")
            .unwrap();
    let path = media.path().join("policy-bundle.json");
    std::fs::write(&path, &bundle).unwrap();
    std::fs::write(
        media.path().join("policy-bundle.json.minisig"),
        key.sign(&bundle, "file:policy-bundle.json").unwrap(),
    )
    .unwrap();
    let start = |dir: &std::path::Path| {
        Gateway::start_with(
            dir,
            Options::with(vec![
                ("POLICY_BUNDLE", path.display().to_string()),
                (
                    "POLICY_BUNDLE_PUBKEY",
                    media.path().join("media.pub").display().to_string(),
                ),
            ]),
        )
    };
    let site = tempdir();
    let gw = start(site.path());
    let (_, token) = agent(&gw, "edge", "verified", &[]);
    assert_eq!(
        gw.check(&token, "read:x").0,
        200,
        "the media's policy is active"
    );
    let (_, got) = gw.get("/admin/policies/reads");
    assert_eq!(got["readOnly"], true, "{got}");
    drop(gw);

    let mut changed = bundle.clone();
    let at = changed.iter().position(|b| *b == b'*').unwrap();
    changed[at] = b'?';
    std::fs::write(&path, &changed).unwrap();
    let other = tempdir();
    let gw = start(other.path());
    assert_eq!(
        gw.get("/admin/policies").1["policies"],
        json!([]),
        "an altered bundle loads nothing"
    );
}

#[test]
fn exported_bundles_carry_a_p256_signature_openssl_checks_and_a_sidecar_loads() {
    let keys = tempdir();
    let secret = keys.path().join("bundle-p256.pem");
    let public = keys.path().join("bundle-p256.pub");
    p256_key_pair(&secret, &public);
    let dir = tempdir();
    let source = Gateway::start_with(
        dir.path(),
        Options::with(vec![(
            "POLICY_BUNDLE_SIGNING_KEY",
            secret.display().to_string(),
        )]),
    );
    policy(
        &source,
        "reads",
        "name: reads\nrules:\n  - name: allow-read\n    effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (status, env) = source.get("/admin/policies/bundle");
    assert_eq!(status, 200, "{env}");
    assert_eq!(
        env["cosignPublicKey"].as_str().map(str::trim),
        Some(std::fs::read_to_string(&public).unwrap().trim()),
        "the key it signs with is the configured one"
    );
    let media = tempdir();
    let bundle = openssl_verifies_the_exported_bundle(&env, &public, media.path());
    let sidecar_dir = tempdir();
    let sidecar = Gateway::start_with(
        sidecar_dir.path(),
        Options::with(vec![
            ("POLICY_BUNDLE", bundle.display().to_string()),
            ("POLICY_BUNDLE_PUBKEY", public.display().to_string()),
        ]),
    );
    let (_, token) = agent(&sidecar, "edge", "verified", &[]);
    assert_eq!(
        sidecar.check(&token, "read:x").0,
        200,
        "the P-256-signed bundle is active"
    );

    // A key that is not P-256 PKCS#8 stops the start with a message naming the setting.
    let bad = tempdir();
    let out = crate::harness::command(
        bad.path(),
        &Options::with(vec![(
            "POLICY_BUNDLE_SIGNING_KEY",
            public.display().to_string(),
        )]),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("POLICY_BUNDLE_SIGNING_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An openssl P-256 key pair: `secret` (PKCS#8 PEM) and `public`.
fn p256_key_pair(secret: &std::path::Path, public: &std::path::Path) {
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        secret.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        secret.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
}

/// Runs openssl; a failure fails the test with its message.
fn openssl(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The exported bundle and its signature written to `media` as a site receives them, and
/// the signature checked by `openssl dgst -verify` with the public key: the bundle's path.
fn openssl_verifies_the_exported_bundle(
    env: &serde_json::Value,
    public: &std::path::Path,
    media: &std::path::Path,
) -> std::path::PathBuf {
    let bundle = media.join("policy-bundle.json");
    std::fs::write(&bundle, env["bundle"].as_str().unwrap()).unwrap();
    std::fs::write(
        media.join("policy-bundle.json.sig"),
        env["sig"].as_str().unwrap(),
    )
    .unwrap();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(env["sig"].as_str().unwrap())
        .unwrap();
    std::fs::write(media.join("sig.der"), der).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        public.to_str().unwrap(),
        "-signature",
        media.join("sig.der").to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));

    bundle
}
