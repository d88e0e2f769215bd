variable "name" {
  description = "Prefix of the policy's name (NAME-gateway)."
  type        = string
}

variable "compartment_id" {
  description = "The compartment the install lives in."
  type        = string
}

variable "region" {
  description = "The region identifier (e.g. eu-frankfurt-1) whose Object Storage service may use the key."
  type        = string
}

variable "cluster_id" {
  description = "The OKE cluster whose service account acts as the gateway."
  type        = string
}

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed in."
  type        = string
  default     = "meshguard"
}

variable "service_account" {
  description = "The gateway's Kubernetes service account (the chart's serviceAccount.name)."
  type        = string
  default     = "meshguard-gateway"
}

variable "kms_key_id" {
  description = "The customer-managed key."
  type        = string
}

variable "archive_bucket" {
  description = "The archive bucket the gateway writes to; null for none."
  type        = string
  default     = null
}

variable "log_id" {
  description = "The SIEM custom log the gateway writes to; null for none."
  type        = string
  default     = null
}

variable "admin_groups" {
  description = "The administrators' groups, as IAM names them ('Default'/'meshguard-admins')."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
