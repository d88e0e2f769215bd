variable "name" {
  description = "The vault's and the key's display name."
  type        = string
}

variable "compartment_id" {
  description = "The compartment the vault and key go in."
  type        = string
}

variable "region" {
  description = "The region identifier the key is in (e.g. eu-frankfurt-1): its Object Storage service is the one allowed to use the key."
  type        = string
}

variable "private_vault" {
  description = "A virtual private vault (its own HSM partition) instead of a shared one."
  type        = bool
  default     = true
}

variable "rotation_period_days" {
  description = "Days between automatic rotations of the key (60-365)."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_days >= 60 && var.rotation_period_days <= 365
    error_message = "rotation_period_days must be between 60 and 365 (OCI Vault's range for automatic rotation)."
  }
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
