variable "agents" {
  description = "Agents to register, by name."
  type = map(object({
    trust_tier = optional(string, "verified")
    tags       = optional(list(string), [])
    metadata   = optional(map(string), {})
  }))
  default = {}

  validation {
    condition = alltrue([
      for a in values(var.agents) : contains(["unverified", "verified", "trusted", "privileged"], a.trust_tier)
    ])
    error_message = "Each agent's trust_tier must be one of: unverified, verified, trusted, privileged."
  }
}

variable "policies_dir" {
  description = "A directory of policy YAML files (*.yaml, *.yml); each policy is named by the `name:` inside it."
  type        = string
  default     = null
}

variable "policies" {
  description = "Policy YAML documents, by any key (e.g. a file name); each policy is named by the `name:` inside it."
  type        = map(string)
  default     = {}
}

variable "alert_channels" {
  description = "Alert channels, by name: webhook (signed with the secret in alert_secrets), slack or pagerduty."
  type = map(object({
    type          = optional(string, "webhook")
    endpoint      = string
    severity      = optional(string, "warning")
    triggers      = optional(list(string), ["deny", "error", "rate_limit"])
    slack_channel = optional(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for c in values(var.alert_channels) : contains(["webhook", "slack", "pagerduty"], c.type)])
    error_message = "Each alert channel's type must be one of: webhook, slack, pagerduty."
  }
  validation {
    condition     = alltrue([for c in values(var.alert_channels) : contains(["info", "warning", "critical"], c.severity)])
    error_message = "Each alert channel's severity must be one of: info, warning, critical."
  }
  validation {
    condition = alltrue(flatten([
      for c in values(var.alert_channels) : [for t in c.triggers : contains(["deny", "error", "rate_limit", "allow", "all"], t)]
    ]))
    error_message = "Alert channel triggers must be among: deny, error, rate_limit, allow, all."
  }
  validation {
    condition     = alltrue([for c in values(var.alert_channels) : can(regex("^https?://", c.endpoint))])
    error_message = "Each alert channel's endpoint must be an http:// or https:// URL."
  }
  validation {
    condition     = alltrue([for c in values(var.alert_channels) : c.type != "slack" || c.slack_channel != null])
    error_message = "A slack alert channel needs slack_channel."
  }
}

variable "alert_secrets" {
  description = "Per alert channel name: the webhook signing secret, or the PagerDuty routing key."
  type        = map(string)
  default     = {}
  sensitive   = true
}
