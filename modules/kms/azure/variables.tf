variable "name" {
  description = "The Key Vault's and the key's name (3-24 letters, digits and '-', globally unique for the vault)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$", var.name))
    error_message = "name must be 3-24 letters, digits or '-', starting with a letter and ending with a letter or digit."
  }
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning), e.g. germanywestcentral."
  type        = string
}

variable "resource_group_name" {
  description = "The resource group the vault goes in."
  type        = string
}

variable "hsm" {
  description = "Keep the key in an HSM (premium vault, RSA-HSM key)."
  type        = bool
  default     = true
}

variable "rotation_period_days" {
  description = "Days after which Key Vault makes a new key version by itself (the key expires after twice that)."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_days >= 28 && floor(var.rotation_period_days) == var.rotation_period_days
    error_message = "rotation_period_days must be a whole number of days, at least 28 (Key Vault's minimum)."
  }
}

variable "public_network_access" {
  description = "Allow access from outside private endpoints (only from allowed_ip_ranges and trusted Azure services)."
  type        = bool
  default     = false
}

variable "allowed_ip_ranges" {
  description = "Public IP ranges allowed through the vault's firewall when public_network_access is on."
  type        = list(string)
  default     = []
}

variable "private_endpoint_subnet_id" {
  description = "The subnet the vault's private endpoint goes in (the networking module's endpoints_subnet_id); null: none (then public_network_access and allowed_ip_ranges must let the deployer and the users in)."
  type        = string
  default     = null
}

variable "private_dns_zone_id" {
  description = "The privatelink.vaultcore.azure.net zone linked to the network, which resolves the vault to its private endpoint; null: none."
  type        = string
  default     = null
}

variable "user_principal_ids" {
  description = "Principal ids (managed identities) allowed to wrap and unwrap with the key."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
