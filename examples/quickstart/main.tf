# The quickstart `cargo xtask demo` applies: the provider comes from a local mirror, the
# gateway URL and admin token from MESHGUARD_GATEWAY_URL and MESHGUARD_ADMIN_TOKEN.
terraform {
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}

provider "meshguard" {}

resource "meshguard_agent" "release_bot" {
  name       = "release-bot"
  trust_tier = "trusted"
  tags       = ["ci", "release"]
}

resource "meshguard_policy" "release" {
  name    = "release-policy"
  content = file("${path.module}/release-policy.yaml")
}

variable "alert_endpoint" {
  description = "Where deny and rate-limit alerts go (the demo passes its receiver on 127.0.0.1)."
  type        = string
  default     = "https://ops.example.com/meshguard"
}

resource "meshguard_alert_channel" "ops" {
  type     = "webhook"
  endpoint = var.alert_endpoint
  severity = "warning"
  triggers = ["deny", "rate_limit"]
}

data "meshguard_agents" "trusted" {
  trust_tier = "trusted"
  depends_on = [meshguard_agent.release_bot]
}

output "release_bot_id" {
  value = meshguard_agent.release_bot.id
}

output "trusted_agents" {
  value = [for a in data.meshguard_agents.trusted.agents : a.name]
}
