//! MeshGuard's Terraform page, complete example: apply, empty second plan, update in place,
//! drift, import, destroy; with Terraform 1.15.5 and 1.0.3.

use serde_json::json;

use crate::harness::{Gateway, Run, TERRAFORMS, Workdir};

/// The complete example of MeshGuard's Terraform page, with what its page leaves out added: the
/// `file()` policy, pagerduty and webhook channels, and the gateway on loopback.
/// One deviation: `data.meshguard_agents.all.count` cannot be referenced in Terraform 0.12 or
/// later (core reserves `.count`), so `total_agents` counts the `agents` list instead.
// Long on purpose: one format! of the example's HCL, data rather than steps.
fn complete_example(gateway_url: &str) -> String {
    format!(
        r##"terraform {{
  required_providers {{
    meshguard = {{
      source = "registry.terraform.io/meshguard/meshguard"
    }}
  }}
}}

provider "meshguard" {{
  gateway_url = "{gateway_url}"
  # admin_token from MESHGUARD_ADMIN_TOKEN
}}

variable "pagerduty_key" {{
  type      = string
  sensitive = true
  default   = "pd-routing-key-5b7d9f1e3c"
}}

variable "webhook_secret" {{
  type      = string
  sensitive = true
  default   = "whsec-acceptance-4a6c8e0f2b"
}}

resource "meshguard_agent" "code_reviewer" {{
  name       = "code-reviewer"
  trust_tier = "verified"
  tags       = ["ci", "code-review"]
  metadata = {{
    team        = "platform"
    environment = "production"
  }}
}}

resource "meshguard_agent" "summarizer" {{
  name       = "doc-summarizer"
  trust_tier = "trusted"
  tags       = ["docs"]
}}

resource "meshguard_policy" "code_review_policy" {{
  name = "code-review-policy"
  content = yamlencode({{
    name          = "code-review-policy"
    version       = "1.0"
    description   = "Policy for code review agents"
    appliesTo     = ["code-reviewer"]
    defaultEffect = "deny"
    rules = [
      {{
        name   = "allow-read-repos"
        effect = "allow"
        conditions = {{
          action = ["read"]
          path   = ["/api/repos/*"]
        }}
      }},
      {{
        name   = "allow-post-comments"
        effect = "allow"
        conditions = {{
          action = ["write"]
          path   = ["/api/repos/*/comments"]
        }}
      }},
    ]
  }})
}}

resource "meshguard_policy" "from_file" {{
  name    = "production-guardrails"
  content = file("policies/production-guardrails.yaml")
}}

resource "meshguard_alert_channel" "slack_alerts" {{
  type          = "slack"
  endpoint      = "https://hooks.slack.com/services/T00/B00/xxx"
  slack_channel = "#meshguard-alerts"
  severity      = "warning"
  triggers      = ["deny", "error"]
}}

resource "meshguard_alert_channel" "pagerduty_critical" {{
  type                  = "pagerduty"
  endpoint              = "https://events.pagerduty.com/v2/enqueue"
  pagerduty_routing_key = var.pagerduty_key
  severity              = "critical"
  triggers              = ["deny"]
}}

resource "meshguard_alert_channel" "webhook" {{
  type           = "webhook"
  endpoint       = "https://siem.example.com/meshguard"
  webhook_secret = var.webhook_secret
}}

data "meshguard_agents" "all" {{
  depends_on = [meshguard_agent.code_reviewer, meshguard_agent.summarizer]
}}

data "meshguard_agents" "trusted_only" {{
  trust_tier = "trusted"
  depends_on = [meshguard_agent.code_reviewer, meshguard_agent.summarizer]
}}

data "meshguard_policies" "all" {{
  depends_on = [meshguard_policy.code_review_policy, meshguard_policy.from_file]
}}

output "code_reviewer_id" {{
  value = meshguard_agent.code_reviewer.id
}}

output "code_reviewer_api_key" {{
  value     = meshguard_agent.code_reviewer.api_key
  sensitive = true
}}

output "total_agents" {{
  value = length(data.meshguard_agents.all.agents)
}}

output "trusted_names" {{
  value = [for a in data.meshguard_agents.trusted_only.agents : a.name]
}}

output "policy_count" {{
  value = length(data.meshguard_policies.all.policies)
}}
"##
    )
}

const GUARDRAILS: &str = "# loaded with file(); comments and layout must survive byte for byte\nname: production-guardrails\nversion: \"2.1\"\nrules:\n  - name: deny-prod-deletes\n    effect: deny\n    actions: [\"delete:prod/*\"]\n    reason: production deletes go through change management\ndefaultEffect: allow\n";

fn lifecycle(terraform: &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    let gw = Gateway::start(tmp.path());
    let wd = Workdir::new(tmp.path(), terraform);
    wd.write("main.tf", &complete_example(&gw.base));
    wd.write("policies/production-guardrails.yaml", GUARDRAILS);
    let init = init_offline(&wd);
    let (apply, agent_id, api_key) = apply_makes_what_the_configuration_says(&wd, &gw);
    // A second plan has nothing to do.
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 0, "second plan not empty:\n{}", plan.all());
    update_in_place(&wd, &gw);
    a_change_outside_terraform_is_planned_back(&wd, &gw);
    a_deletion_outside_terraform_is_planned_as_a_re_create(&wd, &gw, &agent_id);
    a_slack_url_changed_outside_is_seen_by_its_digest(&wd, &gw);
    for address in [
        "meshguard_agent.summarizer",
        "meshguard_policy.from_file",
        "meshguard_alert_channel.slack_alerts",
        "meshguard_alert_channel.pagerduty_critical",
    ] {
        import_then_plan(&wd, address);
    }
    no_secret_is_printed_or_logged(&wd, &gw, &init, &apply, &api_key);
    destroy_leaves_the_gateway_empty(&wd, &gw);
}

/// `terraform init` with no network, from the provider mirror.
fn init_offline(wd: &Workdir) -> Run {
    let init = wd.init_offline().ok();
    assert!(
        init.all()
            .contains("Terraform has been successfully initialized"),
        "{}",
        init.all()
    );
    init
}

/// Apply, then the gateway holds exactly what the configuration says. Returns the apply's run,
/// the code reviewer's id and its api_key.
fn apply_makes_what_the_configuration_says(wd: &Workdir, gw: &Gateway) -> (Run, String, String) {
    let apply = wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
    assert!(
        apply
            .stdout
            .contains("Resources: 7 added, 0 changed, 0 destroyed."),
        "{}",
        apply.stdout
    );
    assert_eq!(gw.names("agents"), ["code-reviewer", "doc-summarizer"]);
    assert_eq!(
        gw.names("policies"),
        ["code-review-policy", "production-guardrails"]
    );
    assert_eq!(gw.names("channels"), ["pagerduty", "slack", "webhook"]);
    let (_, file_policy) = gw.get("/admin/policies/production-guardrails");
    assert_eq!(file_policy["content"], GUARDRAILS);
    let outputs: serde_json::Value =
        serde_json::from_str(&wd.run(&["output", "-json"]).ok().stdout).unwrap();
    assert_eq!(outputs["total_agents"]["value"], 2);
    assert_eq!(outputs["policy_count"]["value"], 2);
    assert_eq!(outputs["trusted_names"]["value"], json!(["doc-summarizer"]));
    let agent_id = outputs["code_reviewer_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_key = outputs["code_reviewer_api_key"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api_key.split('.').count(),
        3,
        "the api_key is the agent's JWT"
    );
    (apply, agent_id, api_key)
}

/// A changed trust tier is planned and applied as an update in place.
fn update_in_place(wd: &Workdir, gw: &Gateway) {
    wd.write(
        "main.tf",
        &complete_example(&gw.base)
            .replace("trust_tier = \"trusted\"", "trust_tier = \"privileged\""),
    );
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    assert!(
        plan.stdout.contains("updated in-place")
            && plan.stdout.contains("1 to change, 0 to destroy"),
        "{}",
        plan.stdout
    );
    wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
    let (_, agents) = gw.get("/admin/agents?trustTier=privileged");
    assert_eq!(agents["agents"][0]["name"], "doc-summarizer");
}

/// Changed outside Terraform: planned update back.
fn a_change_outside_terraform_is_planned_back(wd: &Workdir, gw: &Gateway) {
    let (_, list) = gw.get("/admin/agents");
    let summarizer = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "doc-summarizer")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.patch(
            &format!("/admin/agents/{summarizer}"),
            json!({"tags": ["tampered"]})
        ),
        200
    );
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 2);
    assert!(plan.stdout.contains("1 to change"), "{}", plan.stdout);
}

/// Deleted outside Terraform: planned re-create, applied, then nothing left to do.
fn a_deletion_outside_terraform_is_planned_as_a_re_create(
    wd: &Workdir,
    gw: &Gateway,
    agent_id: &str,
) {
    assert_eq!(gw.delete(&format!("/admin/agents/{agent_id}")), 200);
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 2);
    assert!(
        plan.stdout
            .contains("meshguard_agent.code_reviewer will be created"),
        "{}",
        plan.stdout
    );
    wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
    assert_eq!(wd.run(&["plan", "-detailed-exitcode", "-no-color"]).code, 0);
}

/// The gateway never returns a Slack webhook URL, yet a URL changed outside Terraform is seen
/// (by its digest) and planned back.
fn a_slack_url_changed_outside_is_seen_by_its_digest(wd: &Workdir, gw: &Gateway) {
    let (_, channels) = gw.get("/admin/alert-channels");
    let slack = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "slack")
        .unwrap()
        .clone();
    assert!(!channels.to_string().contains("T00/B00/xxx"), "{channels}");
    assert_eq!(
        gw.patch(
            &format!("/admin/alert-channels/{}", slack["id"].as_str().unwrap()),
            json!({"endpoint": "https://hooks.slack.com/services/T00/B00/other"})
        ),
        200
    );
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    assert_eq!(plan.code, 2, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("meshguard_alert_channel.slack_alerts will be updated")
            && !plan.stdout.contains("T00/B00/xxx"),
        "{}",
        plan.stdout
    );
    wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
    assert_eq!(wd.run(&["plan", "-detailed-exitcode", "-no-color"]).code, 0);
}

/// Import of one resource by the id in its state, then a plan with nothing to do (or, for a
/// channel with a write-only secret, one change that applies to nothing left to do).
fn import_then_plan(wd: &Workdir, address: &str) {
    let show = wd.run(&["state", "show", "-no-color", address]).ok().stdout;
    let id = show
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("id").map(|r| {
                r.trim()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
        })
        .unwrap();
    wd.run(&["state", "rm", address]).ok();
    let import = wd.run(&["import", "-no-color", address, &id]).ok();
    assert!(
        import.stdout.contains("Import successful"),
        "{}",
        import.stdout
    );
    let plan = wd.run(&["plan", "-detailed-exitcode", "-no-color"]);
    // Write-only secrets (a routing key, a Slack webhook URL) cannot be read back, so an
    // imported channel plans to set them.
    let expected = if address.contains("pagerduty") || address.contains("slack") {
        2
    } else {
        0
    };
    assert_eq!(
        plan.code,
        expected,
        "plan after importing {address}:\n{}",
        plan.all()
    );
    if expected == 2 {
        assert!(plan.stdout.contains("1 to change"), "{}", plan.stdout);
        wd.run(&["apply", "-auto-approve", "-no-color"]).ok();
        assert_eq!(wd.run(&["plan", "-detailed-exitcode", "-no-color"]).code, 0);
    }
}

/// Sensitive values never appear in what Terraform printed, nor in the gateway's debug log.
fn no_secret_is_printed_or_logged(
    wd: &Workdir,
    gw: &Gateway,
    init: &Run,
    apply: &Run,
    api_key: &str,
) {
    let printed = format!(
        "{}{}{}",
        init.all(),
        apply.all(),
        wd.run(&["plan", "-no-color"]).all()
    );
    let log = std::fs::read_to_string(&gw.log).unwrap();
    for secret in [
        "pd-routing-key-5b7d9f1e3c",
        "whsec-acceptance-4a6c8e0f2b",
        api_key,
        crate::harness::ADMIN_TOKEN,
    ] {
        assert!(
            !printed.contains(secret),
            "a secret was printed by terraform"
        );
        assert!(!log.contains(secret), "a secret reached the gateway log");
    }
}

/// Destroy leaves the gateway empty.
fn destroy_leaves_the_gateway_empty(wd: &Workdir, gw: &Gateway) {
    let destroy = wd.run(&["destroy", "-auto-approve", "-no-color"]).ok();
    assert!(
        destroy.stdout.contains("Resources: 7 destroyed."),
        "{}",
        destroy.stdout
    );
    assert!(
        gw.names("agents").is_empty()
            && gw.names("policies").is_empty()
            && gw.names("channels").is_empty()
    );
}

#[test]
fn complete_example_lifecycle_with_terraform_1_15() {
    lifecycle(TERRAFORMS[0]);
}

#[test]
fn complete_example_lifecycle_with_terraform_1_0() {
    lifecycle(TERRAFORMS[1]);
}
