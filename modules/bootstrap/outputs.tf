output "agent_ids" {
  description = "Agent ids by name."
  value       = { for name, a in meshguard_agent.this : name => a.id }
}

output "agent_tokens" {
  description = "Agent tokens by name (sensitive)."
  value       = { for name, a in meshguard_agent.this : name => a.api_key }
  sensitive   = true
}

output "policy_ids" {
  description = "Policy ids by name."
  value       = { for name, p in meshguard_policy.this : name => p.id }
}

output "alert_channel_ids" {
  description = "Alert channel ids by name."
  value       = { for name, c in meshguard_alert_channel.this : name => c.id }
}
