variable "name" {
  description = "Name of the log group, stream pool and stream."
  type        = string
  default     = "meshguard"
}

variable "compartment_id" {
  description = "The compartment everything goes in."
  type        = string
}

variable "kms_key_id" {
  description = "The customer-managed key that encrypts the stream pool."
  type        = string
}

variable "retention_days" {
  description = "Days the custom log keeps the events (30-180, in steps of 30)."
  type        = number
  default     = 180

  validation {
    condition     = var.retention_days >= 30 && var.retention_days <= 180 && var.retention_days % 30 == 0
    error_message = "retention_days must be 30, 60, 90, 120, 150 or 180."
  }
}

variable "stream_retention_hours" {
  description = "Hours the stream keeps what the SIEM has not read (24-168)."
  type        = number
  default     = 168

  validation {
    condition     = var.stream_retention_hours >= 24 && var.stream_retention_hours <= 168
    error_message = "stream_retention_hours must be between 24 and 168."
  }
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
