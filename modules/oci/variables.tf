variable "name" {
  description = "The install's name: cluster, network, vault and policy names derive from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "compartment_id" {
  description = "The compartment the install lives in."
  type        = string
}

variable "region" {
  description = "The region identifier the install is pinned to (e.g. eu-frankfurt-1): the oci provider must be configured with it, which the plan checks; set it to the region the license names."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+-[0-9]+$", var.region))
    error_message = "region must be an OCI region identifier such as eu-frankfurt-1."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed in."
  type        = string
  default     = "meshguard"
}

variable "service_account" {
  description = "The gateway's Kubernetes service account: the workload identity policy names it, and helm_values sets the chart's serviceAccount.name to it."
  type        = string
  default     = "meshguard-gateway"
}

variable "egress_proxy_port" {
  description = "The egress proxy's port: the chart's egressProxy.port (3128); the network security group opens it to the agents."
  type        = number
  default     = 3128
}

variable "kubernetes_version" {
  description = "The OKE Kubernetes version, e.g. v1.33.1."
  type        = string
}

variable "vcn_cidr_block" {
  description = "The VCN's range."
  type        = string
  default     = "10.42.0.0/16"
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: no route out (air-gapped)."
  type        = list(string)
  default     = []
}

variable "node_shape" {
  description = "The gateway nodes' shape."
  type        = string
  default     = "VM.Standard.E5.Flex"
}

variable "node_ocpus" {
  description = "OCPUs per node (flexible shapes)."
  type        = number
  default     = 2
}

variable "node_memory_gbs" {
  description = "Memory per node in GB (flexible shapes)."
  type        = number
  default     = 16
}

variable "node_image_id" {
  description = "The OKE node image's OCID for the region and Kubernetes version."
  type        = string
}

variable "system_node_count" {
  description = "System nodes (the add-ons, the agents), spread over the region's availability domains."
  type        = number
  default     = 2
}

variable "node_count" {
  description = "Gateway nodes (tainted: the gateway and its egress proxy only), spread over the region's availability domains."
  type        = number
  default     = 3
}

variable "image_signing_key_id" {
  description = "A Vault key images must be signed with to run (OKE image verification); null runs unsigned images."
  type        = string
  default     = null
}

variable "kms_rotation_period_days" {
  description = "Days between automatic rotations of the customer-managed key."
  type        = number
  default     = 365
}

variable "archive_bucket_name" {
  description = "The WORM audit archive bucket's name."
  type        = string
}

variable "archive_retention_days" {
  description = "Days every archived object is kept."
  type        = number
  default     = 2190
}

variable "archive_lock_retention" {
  description = "Lock the archive's retention rule (irreversible once the lock time passes); false only for a trial install."
  type        = bool
  default     = true
}

variable "archive_lock_after" {
  description = "When the archive's retention rule locks (RFC 3339, at least 14 days ahead); null: 15 days after the bucket is created."
  type        = string
  default     = null
}

variable "admin_groups" {
  description = "The administrators' groups, as IAM names them."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
