variable "name" {
  description = "The key ring's and the key's name."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,63}$", var.name))
    error_message = "name must be 1-63 letters, digits, '_' or '-'."
  }
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "region" {
  description = "The region the key ring lives in (region pinning), e.g. europe-west3."
  type        = string
}

variable "rotation_period_days" {
  description = "Days between automatic rotations of the key (1 or more; 365 is usual)."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_days >= 1 && floor(var.rotation_period_days) == var.rotation_period_days
    error_message = "rotation_period_days must be a whole number of days, at least 1."
  }
}

variable "protection_level" {
  description = "SOFTWARE, or HSM for a key generated and used only in Cloud HSM."
  type        = string
  default     = "HSM"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.protection_level)
    error_message = "protection_level must be SOFTWARE or HSM."
  }
}

variable "user_members" {
  description = "Members (serviceAccount:…, group:…) allowed to encrypt and decrypt with the key."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}
