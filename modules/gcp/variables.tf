variable "name" {
  description = "The install's name: cluster, network, key and account names derive from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,20}$", var.name))
    error_message = "name must be 5-21 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "region" {
  description = "The region every regional resource is created in (region pinning): set it to the region the license names."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region name such as europe-west3 or europe-west10."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed in."
  type        = string
  default     = "meshguard"
}

variable "service_account" {
  description = "The gateway's Kubernetes service account: Workload Identity binds it, and helm_values sets the chart's serviceAccount.name to it."
  type        = string
  default     = "meshguard-gateway"
}

variable "egress_proxy_port" {
  description = "The egress proxy's port: the chart's egressProxy.port (3128); the firewall opens it to the agents."
  type        = number
  default     = 3128
}

variable "subnet_cidr_block" {
  description = "The nodes' subnet range."
  type        = string
  default     = "10.42.0.0/20"
}

variable "master_cidr_block" {
  description = "The /28 the private control plane takes."
  type        = string
  default     = "172.16.0.32/28"
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: no route out (air-gapped)."
  type        = list(string)
  default     = []
}

variable "system_machine_type" {
  description = "The system node pool's machine type (the cluster's add-ons and the agents)."
  type        = string
  default     = "e2-standard-4"
}

variable "system_node_count_max" {
  description = "Nodes per zone the system pool may grow to (it keeps 1)."
  type        = number
  default     = 3
}

variable "node_machine_type" {
  description = "The gateway node pool's machine type (tainted: the gateway and its egress proxy only)."
  type        = string
  default     = "e2-standard-4"
}

variable "node_count_min" {
  description = "Nodes per zone the pool keeps at least."
  type        = number
  default     = 1
}

variable "node_count_max" {
  description = "Nodes per zone the pool may grow to."
  type        = number
  default     = 3
}

variable "kms_rotation_period_days" {
  description = "Days between automatic rotations of the customer-managed key."
  type        = number
  default     = 365
}

variable "archive_bucket_name" {
  description = "The WORM audit archive bucket's name (globally unique)."
  type        = string
}

variable "archive_retention_days" {
  description = "Days every archived object is kept."
  type        = number
  default     = 2190
}

variable "archive_lock_retention" {
  description = "Lock the archive's retention policy (irreversible)."
  type        = bool
  default     = true
}

variable "siem_members" {
  description = "Members (the SIEM's service account) allowed to pull the gateway's stream."
  type        = list(string)
  default     = []
}

variable "admin_members" {
  description = "The site's administrators (group:…, user:…)."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}
