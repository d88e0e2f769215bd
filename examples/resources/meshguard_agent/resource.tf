resource "meshguard_agent" "code_reviewer" {
  name       = "code-reviewer"
  trust_tier = "verified"
  tags       = ["ci", "code-review"]
  metadata = {
    team        = "platform"
    environment = "production"
  }
  # Change to re-issue the agent's token; the previous one stops working at once.
  api_key_rotation = "2026-11"
}

output "code_reviewer_api_key" {
  value     = meshguard_agent.code_reviewer.api_key
  sensitive = true
}
