variable "bucket_name" {
  description = "The archive bucket's name (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit."
  }
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "region" {
  description = "The bucket's location (region pinning), e.g. europe-west3."
  type        = string
}

variable "kms_key_id" {
  description = "The customer-managed key that encrypts the archive (the kms module's key_id)."
  type        = string
}

variable "retention_days" {
  description = "Days every archived object is kept before it may be deleted."
  type        = number
  default     = 2190

  validation {
    condition     = var.retention_days >= 1 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days, at least 1."
  }
}

variable "lock_retention" {
  description = "Lock the retention policy (irreversible: no one can shorten or remove it, as SEC 17a-4 requires)."
  type        = bool
  default     = true
}

variable "writer_members" {
  description = "Members (the gateway's service account) allowed to write and read archived objects; no one may delete them before their retention ends."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}
