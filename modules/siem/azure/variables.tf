variable "name" {
  description = "The Log Analytics workspace's name."
  type        = string
  default     = "meshguard-siem"
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning)."
  type        = string
}

variable "resource_group_name" {
  description = "The resource group the workspace goes in."
  type        = string
}

variable "retention_days" {
  description = "Days the workspace keeps the events (30-730)."
  type        = number
  default     = 400

  validation {
    condition     = var.retention_days >= 30 && var.retention_days <= 730
    error_message = "retention_days must be between 30 and 730."
  }
}

variable "event_hub_id" {
  description = "The customer's Event Hub (or Event Hubs namespace) the events are exported to for an external SIEM; null exports nothing."
  type        = string
  default     = null
}

variable "tables" {
  description = "The workspace tables exported: the containers' logs hold the gateway's stream."
  type        = list(string)
  default     = ["ContainerLogV2"]
}

variable "sentinel" {
  description = "Onboard the workspace to Microsoft Sentinel."
  type        = bool
  default     = false
}

variable "private_endpoint_subnet_id" {
  description = "The subnet of the Monitor private link scope's endpoint (the networking module's endpoints_subnet_id); null: none, and with internet ingestion off the agents then reach nothing."
  type        = string
  default     = null
}

variable "private_dns_zone_ids" {
  description = "The zones Azure Monitor's private link resolves in: privatelink.monitor.azure.com, .oms.opinsights.azure.com, .ods.opinsights.azure.com, .agentsvc.azure-automation.net, .blob.core.windows.net."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
