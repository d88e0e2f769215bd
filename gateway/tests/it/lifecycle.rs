//! Start-up checks, persistence across `kill -9`, and one gateway per database.

use std::process::Stdio;

use serde_json::json;

use crate::harness::{Gateway, Options, agent, command, policy, tempdir};

#[test]
fn nothing_acknowledged_is_lost_across_kill_9() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let (id, token) = agent(&gw, "survivor", "trusted", &["prod"]);
    let pid = policy(
        &gw,
        "keep",
        "name: keep\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n",
    );
    let (_, channel) = gw.post(
        "/admin/alert-channels",
        json!({"type": "webhook", "endpoint": "https://h.example/x"}),
    );
    gw.patch(
        &format!("/admin/agents/{id}"),
        json!({"metadata": {"last": "write"}}),
    );
    gw.kill9();

    let gw = Gateway::start(dir.path());
    let (status, got) = gw.get(&format!("/admin/agents/{id}"));
    assert_eq!(
        (status, got["metadata"]["last"].as_str()),
        (200, Some("write"))
    );
    assert_eq!(gw.get(&format!("/admin/policies/{pid}")).0, 200);
    assert_eq!(
        gw.get(&format!(
            "/admin/alert-channels/{}",
            channel["id"].as_str().unwrap()
        ))
        .0,
        200
    );
    assert_eq!(
        gw.get("/admin/changes").1["changes"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // The same JWT_SECRET: tokens issued before the crash still work, and policies are active.
    assert_eq!(gw.check(&token, "read:x").0, 200);
}

#[test]
fn a_second_gateway_on_the_same_database_is_refused_cleanly() {
    let dir = tempdir();
    let _first = Gateway::start(dir.path());
    let out = command(dir.path(), &Options::default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another gateway") && stderr.contains("already using"),
        "{stderr}"
    );
}

#[test]
fn missing_or_weak_secrets_stop_the_start_with_advice() {
    let dir = tempdir();
    let run = |env: Vec<(&str, String)>| {
        let out = command(
            dir.path(),
            &Options {
                env,
                args: vec![],
                program: None,
            },
        )
        .output()
        .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(vec![("JWT_SECRET", crate::harness::JWT_SECRET.into())]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("ADMIN_TOKEN is not set") && stderr.contains("--dev"),
        "{stderr}"
    );
    let (code, stderr) = run(vec![
        ("ADMIN_TOKEN", crate::harness::ADMIN_TOKEN.into()),
        ("JWT_SECRET", "tooshort".into()),
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("JWT_SECRET is too weak"), "{stderr}");
    // A misspelled mode names the variable the user set.
    let (code, stderr) = run(vec![
        ("ADMIN_TOKEN", crate::harness::ADMIN_TOKEN.into()),
        ("JWT_SECRET", crate::harness::JWT_SECRET.into()),
        ("MODE", "enforcing".into()),
    ]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("MODE (--mode) is \"enforcing\"")
            && stderr.contains("enforce, audit or bypass"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the configuration is accepted"
    );
}

#[test]
fn dev_mode_generates_and_prints_the_admin_token_once() {
    let dir = tempdir();
    let gw = Gateway::start_with(
        dir.path(),
        Options {
            env: vec![],
            args: vec!["--dev"],
            program: None,
        },
    );
    let line = gw
        .stdout_lines
        .iter()
        .find(|l| l.contains("admin token"))
        .expect("token printed");
    let token = line.rsplit(' ').next().unwrap();
    assert!(token.starts_with("msat_"));
    let (status, _) = crate::harness::json(
        gw.raw(reqwest::Method::GET, "/admin/agents")
            .header("X-Admin-Token", token)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        gw.stdout_lines.iter().filter(|l| l.contains(token)).count(),
        1
    );
}

/// `--probe URL`, the exec probe of the loopback-only sidecar: 0 only for a 200 answer, 1 with
/// the reason for anything else, and no configuration needed (a probe has no secrets).
#[test]
fn the_probe_exits_zero_only_for_a_200() {
    let dir = tempdir();
    let gw = Gateway::start(dir.path());
    let probe = |url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshguard-gateway"))
            .args(["--probe", url])
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(probe(&gw.url("/health")), (Some(0), String::new()));
    let (code, said) = probe(&gw.url("/no/such/route"));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("HTTP 404"), "{said}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, said) = probe(&format!("http://127.0.0.1:{port}/health"));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("probe http://127.0.0.1:"), "{said}");
}
