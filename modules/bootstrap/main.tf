# A site's governance bootstrap: agents, policies (named by their content) and alert channels.

resource "meshguard_agent" "this" {
  for_each   = var.agents
  name       = each.key
  trust_tier = each.value.trust_tier
  tags       = each.value.tags
  metadata   = each.value.metadata
}

locals {
  policy_files = var.policies_dir == null ? {} : {
    for f in fileset(var.policies_dir, "*.{yaml,yml}") : f => file("${var.policies_dir}/${f}")
  }
  policy_documents = merge(local.policy_files, var.policies)
  # A policy is named by its own `name:`, as the gateway requires.
  policy_names = { for key, content in local.policy_documents : key => try(tostring(yamldecode(content).name), null) }
  policies = {
    for key, content in local.policy_documents : coalesce(local.policy_names[key], "(unnamed: ${key})") => {
      key     = key
      content = content
    }
  }
}

resource "meshguard_policy" "this" {
  for_each = local.policies
  name     = each.key
  content  = each.value.content

  lifecycle {
    precondition {
      condition     = local.policy_names[each.value.key] != null
      error_message = "The policy document ${each.value.key} has no top-level `name:`; every policy must name itself."
    }
  }
}

resource "meshguard_alert_channel" "this" {
  for_each              = var.alert_channels
  type                  = each.value.type
  endpoint              = each.value.endpoint
  severity              = each.value.severity
  triggers              = each.value.triggers
  slack_channel         = each.value.slack_channel
  webhook_secret        = each.value.type == "webhook" ? lookup(var.alert_secrets, each.key, null) : null
  pagerduty_routing_key = each.value.type == "pagerduty" ? lookup(var.alert_secrets, each.key, null) : null
}
