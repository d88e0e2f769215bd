# A regulated site's bootstrap: the clinical assistant agent, the HIPAA policy that governs it,
# and a critical webhook to the security team's receiver, signed with a secret.
terraform {
  required_version = ">= 1.6.6"
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}

provider "meshguard" {}

variable "security_webhook" {
  description = "The security team's alert receiver."
  type        = string
  default     = "https://security.example.org/hooks/meshguard"
}

variable "security_webhook_secret" {
  description = "Signs the webhook deliveries (X-MeshGuard-Signature)."
  type        = string
  sensitive   = true
}

module "bootstrap" {
  source       = "../../modules/bootstrap"
  policies_dir = "${path.module}/policies"
  agents = {
    "clinical-assistant" = {
      trust_tier = "verified"
      tags       = ["hipaa", "clinical"]
      metadata   = { owner = "clinical-informatics", data_class = "phi" }
    }
  }
  alert_channels = {
    "security-critical" = {
      endpoint = var.security_webhook
      severity = "critical"
      triggers = ["deny", "error"]
    }
  }
  alert_secrets = { "security-critical" = var.security_webhook_secret }
}

output "agent_ids" {
  value = module.bootstrap.agent_ids
}

output "policy_ids" {
  value = module.bootstrap.policy_ids
}

output "alert_channel_ids" {
  value = module.bootstrap.alert_channel_ids
}
