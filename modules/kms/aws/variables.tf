variable "name" {
  description = "Key alias (without alias/), e.g. meshguard-acme."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9/_-]{1,250}$", var.name)) && !can(regex("^aws/", var.name))
    error_message = "The name must be 1-250 letters, digits, '/', '_' or '-', and must not start with aws/."
  }
}

variable "region" {
  description = "The AWS region every resource of this module is created in (region pinning)."
  type        = string
}

variable "rotation_period_days" {
  description = "Days between automatic rotations of the key material (90-2560)."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_days >= 90 && var.rotation_period_days <= 2560
    error_message = "rotation_period_days must be between 90 and 2560 (the range AWS KMS accepts)."
  }
}

variable "deletion_window_days" {
  description = "Days a scheduled deletion waits (7-30), during which it can be cancelled."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_days >= 7 && var.deletion_window_days <= 30
    error_message = "deletion_window_days must be between 7 and 30."
  }
}

variable "user_arns" {
  description = "IAM principals (roles) allowed to use the key for encryption and decryption."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
