variable "bucket_name" {
  description = "The archive bucket's name (unique in the tenancy's namespace)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,256}$", var.bucket_name))
    error_message = "bucket_name must be 1-256 letters, digits, '.', '_' or '-'."
  }
}

variable "compartment_id" {
  description = "The compartment the bucket goes in."
  type        = string
}

variable "kms_key_id" {
  description = "The customer-managed key (the kms module's key_id); Object Storage must be allowed to use it (the identity module's policy)."
  type        = string
}

variable "retention_days" {
  description = "Days every archived object is kept before it may be deleted."
  type        = number
  default     = 2190
}

variable "lock_retention" {
  description = "Lock the retention rule (irreversible once the lock time passes): true by default, false only for a trial install."
  type        = bool
  default     = true
}

variable "lock_after" {
  description = "When the retention rule locks (RFC 3339, at least 14 days ahead); null: 15 days after the bucket is created."
  type        = string
  default     = null
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
