data "meshguard_agents" "all" {}

data "meshguard_agents" "trusted_only" {
  trust_tier = "trusted"
}

output "trusted_agent_names" {
  value = [for a in data.meshguard_agents.trusted_only.agents : a.name]
}

# Terraform reserves `.count` on references, so count the list:
output "total_agents" {
  value = length(data.meshguard_agents.all.agents)
}
