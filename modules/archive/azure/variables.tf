variable "storage_account_name" {
  description = "The archive storage account's name (3-24 lowercase letters and digits, globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name must be 3-24 lowercase letters and digits."
  }
}

variable "container_name" {
  description = "The blob container the archive is written to."
  type        = string
  default     = "audit-archive"
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning)."
  type        = string
}

variable "resource_group_name" {
  description = "The resource group the account goes in."
  type        = string
}

variable "key_vault_id" {
  description = "The Key Vault holding the customer-managed key (the kms module's key_vault_id)."
  type        = string
}

variable "key_id" {
  description = "The customer-managed key's versionless id (the kms module's key_id), so the account follows rotations."
  type        = string
}

variable "replication_type" {
  description = "The account's redundancy: ZRS keeps copies in three zones of the region; GRS and GZRS also copy to the paired region (which may be outside the sovereign boundary)."
  type        = string
  default     = "ZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "GZRS", "RAGRS", "RAGZRS"], var.replication_type)
    error_message = "replication_type must be one of LRS, ZRS, GRS, GZRS, RAGRS, RAGZRS."
  }
}

variable "retention_days" {
  description = "Days every archived blob is immutable (1-146000)."
  type        = number
  default     = 2190

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 146000
    error_message = "retention_days must be between 1 and 146000."
  }
}

variable "lock_retention" {
  description = "Lock the immutability policy (irreversible: it can then only be extended, as SEC 17a-4 requires)."
  type        = bool
  default     = true
}

variable "writer_principal_ids" {
  description = "Principal ids (the gateway's managed identity) allowed to write and read the archive."
  type        = list(string)
  default     = []
}

variable "private_endpoint_subnet_id" {
  description = "The subnet the blob service's private endpoint goes in (the networking module's endpoints_subnet_id); null: none, and with public network access off nothing reaches the archive."
  type        = string
  default     = null
}

variable "private_dns_zone_id" {
  description = "The privatelink.blob.core.windows.net zone linked to the network; null: none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
