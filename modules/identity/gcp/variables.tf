variable "name" {
  description = "Prefix of the service account id (NAME-gateway)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,20}$", var.name))
    error_message = "name must be 5-21 lowercase letters, digits or '-', starting with a letter (service account ids are 6-30 characters)."
  }
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "workload_pool" {
  description = "The cluster's workload identity pool, PROJECT.svc.id.goog, taken from the cluster (google_container_cluster.workload_identity_config[0].workload_pool) so the binding waits for it."
  type        = string

  validation {
    condition     = can(regex("\\.svc\\.id\\.goog$", var.workload_pool))
    error_message = "workload_pool must be the cluster's pool, PROJECT.svc.id.goog."
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

variable "admin_members" {
  description = "The site's administrators, e.g. group:meshguard-admins@example.com."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.admin_members : can(regex("^(user|group|serviceAccount):", m))])
    error_message = "admin_members must be IAM members: user:…, group:… or serviceAccount:…."
  }
}

variable "admin_roles" {
  description = "Roles the administrators get on the project."
  type        = list(string)
  default     = ["roles/container.developer", "roles/logging.viewer"]
}
