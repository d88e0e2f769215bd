variable "log_group_name" {
  description = "The CloudWatch log group the gateway's audit and alert stream is shipped to."
  type        = string
  default     = "/meshguard/gateway"
}

variable "region" {
  description = "The AWS region every resource of this module is created in (region pinning)."
  type        = string
}

variable "kms_key_arn" {
  description = "The customer-managed KMS key that encrypts the log group (the kms module's key_arn)."
  type        = string
}

variable "retention_days" {
  description = "Days CloudWatch keeps the events (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 400

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.retention_days)
    error_message = "retention_days must be one CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "destination_arn" {
  description = "The customer's SIEM intake: a Kinesis data stream or Firehose delivery stream ARN; null keeps the events in CloudWatch only."
  type        = string
  default     = null
}

variable "filter_pattern" {
  description = "Which events are forwarded (CloudWatch filter pattern); the default forwards all."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
