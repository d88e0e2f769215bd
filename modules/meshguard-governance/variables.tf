variable "agents" {
  description = "Agents to register, by name."
  type = map(object({
    trust_tier = optional(string, "verified")
    tags       = optional(list(string), [])
  }))
  default = {}
}

variable "policies_dir" {
  description = "A directory of policy YAML files; each becomes a meshguard_policy named after its file."
  type        = string
  default     = null
}

variable "alert_webhooks" {
  description = "Webhook alert channels, by name."
  type = map(object({
    endpoint = string
    severity = optional(string, "warning")
    triggers = optional(list(string), ["deny", "error", "rate_limit"])
  }))
  default = {}
}
