variable "bucket_name" {
  description = "The archive bucket's name (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit."
  }
}

variable "region" {
  description = "The AWS region every resource of this module is created in (region pinning)."
  type        = string
}

variable "kms_key_arn" {
  description = "The customer-managed KMS key that encrypts the archive (the kms module's key_arn)."
  type        = string
}

variable "lock_mode" {
  description = "S3 Object Lock mode: COMPLIANCE (no one, root included, shortens retention) or GOVERNANCE (privileged users may)."
  type        = string
  default     = "COMPLIANCE"

  validation {
    condition     = contains(["COMPLIANCE", "GOVERNANCE"], var.lock_mode)
    error_message = "lock_mode must be COMPLIANCE or GOVERNANCE."
  }
}

variable "retention_days" {
  description = "Days every archived object is locked (e.g. 2190 for six years under FINRA 17a-4, 2190 for HIPAA)."
  type        = number
  default     = 2190

  validation {
    condition     = var.retention_days >= 1 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days, at least 1."
  }
}

variable "writer_arns" {
  description = "IAM roles allowed to write and read the archive (the gateway's workload role, the archive job's)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
