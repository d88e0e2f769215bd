variable "name" {
  description = "The topic's and the sink's name."
  type        = string
  default     = "meshguard-siem"
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "region" {
  description = "The only region messages are stored in (region pinning)."
  type        = string
}

variable "kms_key_id" {
  description = "The customer-managed key that encrypts the topic (the kms module's key_id)."
  type        = string
}

variable "filter" {
  description = "Which log entries are routed: by default the gateway's containers."
  type        = string
  default     = "resource.type=\"k8s_container\" AND labels.\"k8s-pod/app_kubernetes_io/name\"=\"meshguard-gateway\""
}

variable "retention_days" {
  description = "Days the subscription keeps unacknowledged messages (1-7), while the SIEM is away."
  type        = number
  default     = 7

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 7
    error_message = "retention_days must be between 1 and 7 (Pub/Sub's limit for subscriptions)."
  }
}

variable "siem_members" {
  description = "Members (the SIEM's service account) allowed to pull from the subscription."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}
