//! `modules/bootstrap` through `examples/regulated`, applied for real: the clinical assistant
//! agent, the HIPAA policy named by its own content, the critical webhook with its secret; an
//! empty second plan; inputs refused at plan time with messages that say what is allowed.

use std::path::Path;

use crate::harness::{Gateway, TERRAFORMS, Workdir};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The example in `wd`, its module source pointing at the repository's module and its provider
/// at `gateway` (the rest as written).
fn regulated(wd: &Workdir, gateway: &str) {
    let main = std::fs::read_to_string(repo().join("examples/regulated/main.tf")).unwrap();
    let main = main
        .replace(
            "\"../../modules/bootstrap\"",
            &format!("\"{}\"", repo().join("modules/bootstrap").display()),
        )
        .replace(
            "provider \"meshguard\" {}",
            &format!("provider \"meshguard\" {{\n  gateway_url = \"{gateway}\"\n}}"),
        );
    wd.write("main.tf", &main);
    let policy =
        std::fs::read_to_string(repo().join("examples/regulated/policies/hipaa-phi.yaml")).unwrap();
    wd.write("policies/hipaa-phi.yaml", &policy);
}

const SECRET: &str = "-var=security_webhook_secret=whsec-regulated-8d2f4b6a1c";

/// Terraform 1.15.5 and the oldest the module claims (`versions.tf`: 1.6.6; optional
/// attributes with defaults need 1.3, and 1.3-1.5 cannot be installed here).
const BOOTSTRAP_TERRAFORMS: [&str; 2] = ["terraform", "terraform-1.6.6"];

const NEW_WEBHOOK: &str = "-var=security_webhook=https://security.example.org/hooks/meshguard-v2";

#[test]
fn the_regulated_example_applies_changes_imports_and_destroys_through_the_bootstrap_module() {
    for tf in BOOTSTRAP_TERRAFORMS {
        let tmp = tempfile::tempdir().unwrap();
        let gw = Gateway::start(tmp.path());
        let wd = Workdir::new(tmp.path(), tf);
        regulated(&wd, &gw.base);
        wd.init_offline().ok();
        let outputs = applied_the_gateway_holds_the_example(tf, &wd, &gw);
        let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color", SECRET]);
        assert_eq!(plan.code, 0, "{tf}: second plan is empty: {}", plan.all());
        the_receiver_moves_and_the_channel_is_updated_in_place(tf, &wd, &gw);
        the_agent_forgotten_by_the_state_is_imported_back(tf, &wd, &outputs);
        destroyed_the_gateway_holds_nothing_active(tf, &wd, &gw);
    }
}

/// Applied with the webhook secret (never shown): the agent, the policy named by its content,
/// the critical channel with its secret set, and their ids in the outputs, which it returns.
fn applied_the_gateway_holds_the_example(
    tf: &str,
    wd: &Workdir,
    gw: &Gateway,
) -> serde_json::Value {
    let apply = wd
        .run(&["apply", "-auto-approve", "-no-color", SECRET])
        .ok();
    assert!(
        !apply.all().contains("whsec-regulated"),
        "{tf}: the secret is not shown: {}",
        apply.all()
    );
    assert_eq!(gw.names("agents"), ["clinical-assistant"], "{tf}");
    assert_eq!(
        gw.names("policies"),
        ["hipaa-phi-access"],
        "{tf}: named by its content, not its file"
    );
    let (_, channels) = gw.get("/admin/alert-channels");
    let channel = &channels["channels"][0];
    assert_eq!(channel["severity"], "critical", "{tf}: {channel}");
    assert_eq!(channel["webhookSecretSet"], true, "{tf}: {channel}");
    let outputs = wd.run(&["output", "-json"]).ok();
    let outputs: serde_json::Value = serde_json::from_str(&outputs.stdout).unwrap();
    assert!(
        outputs["alert_channel_ids"]["value"]["security-critical"]
            .as_str()
            .unwrap()
            .starts_with("channel_")
    );
    assert!(
        outputs["policy_ids"]["value"]["hipaa-phi-access"]
            .as_str()
            .is_some()
    );
    outputs
}

/// Changed: the security team's receiver moves; the channel is updated in place.
fn the_receiver_moves_and_the_channel_is_updated_in_place(tf: &str, wd: &Workdir, gw: &Gateway) {
    let apply = wd
        .run(&["apply", "-auto-approve", "-no-color", SECRET, NEW_WEBHOOK])
        .ok();
    assert!(
        apply.stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{tf}: {}",
        apply.stdout
    );
    let (_, channels) = gw.get("/admin/alert-channels");
    assert_eq!(
        channels["channels"][0]["endpoint"], "https://security.example.org/hooks/meshguard-v2",
        "{tf}"
    );
}

/// Imported: the agent, forgotten by the state, is taken back by its id with nothing to do.
fn the_agent_forgotten_by_the_state_is_imported_back(
    tf: &str,
    wd: &Workdir,
    outputs: &serde_json::Value,
) {
    let agent = "module.bootstrap.meshguard_agent.this[\"clinical-assistant\"]";
    let id = outputs["agent_ids"]["value"]["clinical-assistant"]
        .as_str()
        .unwrap()
        .to_owned();
    wd.run(&["state", "rm", agent]).ok();
    let import = wd
        .run(&["import", "-no-color", SECRET, NEW_WEBHOOK, agent, &id])
        .ok();
    assert!(
        import.stdout.contains("Import successful"),
        "{tf}: {}",
        import.stdout
    );
    let plan = wd.run(&[
        "plan",
        "-detailed-exitcode",
        "-no-color",
        SECRET,
        NEW_WEBHOOK,
    ]);
    assert_eq!(plan.code, 0, "{tf}: plan after the import: {}", plan.all());
}

/// Destroyed: the policy and the channel are gone, the agent revoked.
fn destroyed_the_gateway_holds_nothing_active(tf: &str, wd: &Workdir, gw: &Gateway) {
    wd.run(&["destroy", "-auto-approve", "-no-color", SECRET, NEW_WEBHOOK])
        .ok();
    assert!(gw.names("policies").is_empty(), "{tf}");
    assert!(gw.names("channels").is_empty(), "{tf}");
    let (_, agents) = gw.get("/admin/agents");
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] != "active"),
        "{tf}: {agents}"
    );
}

#[test]
fn the_bootstrap_module_refuses_bad_input_at_plan_time_saying_what_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(tmp.path());
    let module = repo().join("modules/bootstrap").display().to_string();
    let cases = [
        (
            "agents = { bot = { trust_tier = \"root\" } }",
            "must be one of: unverified, verified, trusted, privileged",
        ),
        (
            "alert_channels = { ops = { endpoint = \"https://x.example\", severity = \"urgent\" } }",
            "must be one of: info, warning, critical",
        ),
        (
            "alert_channels = { ops = { endpoint = \"https://x.example\", triggers = [\"sometimes\"] } }",
            "must be among: deny, error, rate_limit, allow, all",
        ),
        (
            "alert_channels = { ops = { endpoint = \"ftp://x.example\" } }",
            "must be an http:// or https:// URL",
        ),
        (
            "policies = { \"nameless.yaml\" = \"rules: []\\n\" }",
            "nameless.yaml has no top-level `name:`",
        ),
    ];
    for (input, message) in cases {
        let wd = Workdir::new(
            &tmp.path().join(format!("case{}", message.len())),
            TERRAFORMS[0],
        );
        wd.write(
            "main.tf",
            &format!(
                "terraform {{\n  required_providers {{\n    meshguard = {{ source = \"registry.terraform.io/meshguard/meshguard\" }}\n  }}\n}}\n\nprovider \"meshguard\" {{\n  gateway_url = \"{}\"\n}}\n\nmodule \"bootstrap\" {{\n  source = \"{module}\"\n  {input}\n}}\n",
                gw.base
            ),
        );
        wd.init_offline().ok();
        let plan = wd.run(&["plan", "-no-color"]);
        assert_ne!(plan.code, 0, "{input} must not plan");
        let text = plan.all().split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(message), "{input}: {}", plan.all());
    }
}

/// The module states the Terraform it needs and is tested with (1.6.6), and Terraform 1.0.3
/// refuses it at init, before anything is planned. (1.0.3 reports the first syntax it does not
/// know rather than the version constraint; the README says so.)
#[test]
fn terraform_older_than_the_module_claims_refuses_it_at_init() {
    let versions = std::fs::read_to_string(repo().join("modules/bootstrap/versions.tf")).unwrap();
    assert!(versions.contains("required_version = \">= 1.6.6\""));
    let tmp = tempfile::tempdir().unwrap();
    let wd = Workdir::new(tmp.path(), TERRAFORMS[1]);
    regulated(&wd, "http://127.0.0.1:9");
    let init = wd.init_offline();
    assert_ne!(init.code, 0, "{}", init.all());
    assert!(init.all().contains("modules/bootstrap"), "{}", init.all());
}
