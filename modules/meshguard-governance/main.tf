# A site's governance baseline: agents, the policies of a directory, and alert webhooks.

resource "meshguard_agent" "this" {
  for_each   = var.agents
  name       = each.key
  trust_tier = each.value.trust_tier
  tags       = each.value.tags
}

locals {
  policy_files = var.policies_dir == null ? toset([]) : fileset(var.policies_dir, "*.{yaml,yml}")
}

resource "meshguard_policy" "this" {
  for_each = local.policy_files
  name     = trimsuffix(trimsuffix(each.value, ".yaml"), ".yml")
  content  = file("${var.policies_dir}/${each.value}")
}

resource "meshguard_alert_channel" "this" {
  for_each = var.alert_webhooks
  type     = "webhook"
  endpoint = each.value.endpoint
  severity = each.value.severity
  triggers = each.value.triggers
}
