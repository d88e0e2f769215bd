variable "name" {
  description = "Prefix of the identity's name (NAME-gateway)."
  type        = string
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning)."
  type        = string
}

variable "resource_group_name" {
  description = "The resource group the identity goes in."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (azurerm_kubernetes_cluster.oidc_issuer_url)."
  type        = string

  validation {
    condition     = can(regex("^https://", var.oidc_issuer_url))
    error_message = "oidc_issuer_url must be the issuer's https:// URL."
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

variable "cluster_id" {
  description = "The AKS cluster the administrators' role applies to."
  type        = string
}

variable "admin_group_object_ids" {
  description = "Microsoft Entra groups of the site's administrators (object ids)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
