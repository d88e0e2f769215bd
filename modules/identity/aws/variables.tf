variable "name" {
  description = "Prefix of the IAM role names (NAME-gateway, NAME-admin)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,50}$", var.name))
    error_message = "name must be 1-50 characters among letters, digits and +=,.@_- (IAM role names)."
  }
}

variable "oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider ARN (the aws module's, or your EKS cluster's)."
  type        = string
}

variable "oidc_issuer_host" {
  description = "The cluster's OIDC issuer without https://, e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE."
  type        = string

  validation {
    condition     = !can(regex("^https?://", var.oidc_issuer_host))
    error_message = "oidc_issuer_host is the issuer without its scheme: drop the https://."
  }
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

variable "kms_key_arn" {
  description = "The customer-managed key the gateway encrypts and decrypts with."
  type        = string
}

variable "archive_bucket_arn" {
  description = "The audit archive bucket the gateway writes to; null for none."
  type        = string
  default     = null
}

variable "log_group_arn" {
  description = "The SIEM log group the gateway writes to; null for none."
  type        = string
  default     = null
}

variable "cluster_arn" {
  description = "The EKS cluster the administrators' role may describe and reach; null: none (list only)."
  type        = string
  default     = null
}

variable "admin_principal_arns" {
  description = "IAM principals (users, roles, an identity center permission set's role) that may assume the admin role, with MFA; empty: no admin role."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
