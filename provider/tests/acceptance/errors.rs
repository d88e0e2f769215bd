//! Mistakes caught at plan time, pointing at the attribute; an unreachable gateway said plainly.

use crate::harness::{Gateway, TERRAFORMS, Workdir};

fn config(gateway_url: &str, body: &str) -> String {
    format!(
        "terraform {{\n  required_providers {{\n    meshguard = {{ source = \"registry.terraform.io/meshguard/meshguard\" }}\n  }}\n}}\n\nprovider \"meshguard\" {{\n  gateway_url = \"{gateway_url}\"\n}}\n\n{body}\n"
    )
}

#[test]
fn invalid_input_fails_at_plan_time_naming_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(tmp.path());
    let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
    wd.write("main.tf", &config(&gw.base, "resource \"meshguard_agent\" \"a\" {\n  name       = \"a\"\n  trust_tier = \"superuser\"\n}\n"));
    wd.init_offline().ok();
    let plan = wd.run(&["plan", "-no-color"]);
    assert_ne!(plan.code, 0);
    let out = plan.all();
    assert!(out.contains("Error: invalid trust_tier"), "{out}");
    assert!(
        out.contains("trust_tier = \"superuser\""),
        "the diagnostic points at the attribute: {out}"
    );
    assert!(
        out.contains("unknown trust tier \"superuser\"; expected one of unverified"),
        "{out}"
    );

    // A broken policy fails before anything is applied, with the gateway's message and line.
    let policy = "resource \"meshguard_policy\" \"p\" {\n  name    = \"p\"\n  content = <<-EOT\n    name: p\n    rules:\n      - name: r\n        effect: permit\n        actions: [\"read:*\"]\n  EOT\n}\n";
    wd.write("main.tf", &config(&gw.base, policy));
    let plan = wd.run(&["plan", "-no-color"]);
    assert_ne!(plan.code, 0);
    let out = plan.all();
    assert!(out.contains("Error: invalid policy content"), "{out}");
    assert!(
        out.contains("line 4: rules[0].effect: expected allow, deny or require_approval"),
        "{out}"
    );
    assert!(
        out.contains("content = <<-EOT"),
        "the diagnostic points at content: {out}"
    );

    // A name that contradicts the content's own name is caught at plan time too.
    wd.write("main.tf", &config(&gw.base, "resource \"meshguard_policy\" \"p\" {\n  name    = \"outer\"\n  content = \"name: inner\\nrules:\\n  - effect: allow\\n    actions: [a]\\n\"\n}\n"));
    let plan = wd.run(&["plan", "-no-color"]);
    assert!(
        plan.all()
            .contains("Error: policy name does not match its content"),
        "{}",
        plan.all()
    );

    // Type-dependent requirements of alert channels.
    wd.write("main.tf", &config(&gw.base, "resource \"meshguard_alert_channel\" \"s\" {\n  type     = \"slack\"\n  endpoint = \"https://hooks.slack.com/services/x\"\n}\n"));
    let plan = wd.run(&["plan", "-no-color"]);
    assert!(
        plan.all()
            .contains("slack_channel is required when type is slack"),
        "{}",
        plan.all()
    );

    // Nothing reached the gateway.
    assert!(
        gw.names("agents").is_empty()
            && gw.names("policies").is_empty()
            && gw.names("channels").is_empty()
    );
}

#[test]
fn an_unreachable_gateway_is_named_and_state_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(tmp.path());
    let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
    wd.write(
        "main.tf",
        &config(
            &gw.base,
            "resource \"meshguard_agent\" \"a\" {\n  name = \"a\"\n}\n",
        ),
    );
    wd.init_offline().ok();
    wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
    gw.stop();

    let plan = wd.run(&["plan", "-no-color"]);
    assert_ne!(plan.code, 0);
    let out = plan.all();
    assert!(
        out.contains("cannot reach the MeshGuard gateway at"),
        "{out}"
    );
    assert!(
        out.contains("check gateway_url and that the gateway is running"),
        "{out}"
    );
    assert!(
        !out.contains("panicked") && !out.contains("stack backtrace"),
        "{out}"
    );
    // The resource is still in state: a transient error never drops it.
    let list = wd.run(&["state", "list"]).ok();
    assert_eq!(list.stdout.trim(), "meshguard_agent.a");
}

#[test]
fn a_wrong_admin_token_is_reported_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(tmp.path());
    let wd = Workdir::new(tmp.path(), TERRAFORMS[0]);
    wd.write(
        "main.tf",
        &config(
            &gw.base,
            "resource \"meshguard_agent\" \"a\" {\n  name = \"a\"\n}\n",
        )
        .replace(
            &format!("gateway_url = \"{}\"", gw.base),
            &format!(
                "gateway_url = \"{}\"\n  admin_token = \"not-the-token\"",
                gw.base
            ),
        ),
    );
    wd.init_offline().ok();
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]);
    assert_ne!(apply.code, 0);
    assert!(
        apply.all().contains("the gateway refused the admin token"),
        "{}",
        apply.all()
    );
    assert!(!apply.all().contains("not-the-token"));
}

/// Run by hand (not by Terraform), the plugin says what it is and how to use it, and exits
/// instead of printing a handshake line and waiting forever.
#[test]
fn run_by_hand_the_plugin_says_what_it_is_and_exits() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_terraform-provider-meshguard"))
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A liveness guard, not a timing assertion: a plugin that waits for Terraform never exits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the provider run by hand did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a Terraform plugin"), "{err}");
    assert!(err.contains("terraform init -plugin-dir"), "{err}");
    assert!(out.stdout.is_empty(), "no handshake line on stdout");
}
