variable "name" {
  description = "The install's name: the cluster, the key alias, role and network names derive from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "region" {
  description = "The AWS region every resource is created in (region pinning): set it to the region the license names."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-central-1 or us-gov-west-1."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed in."
  type        = string
  default     = "meshguard"
}

variable "service_account" {
  description = "The gateway's Kubernetes service account: the role trusts it, and helm_values sets the chart's serviceAccount.name to it."
  type        = string
  default     = "meshguard-gateway"
}

variable "egress_proxy_port" {
  description = "The egress proxy's port: the chart's egressProxy.port (3128); the security groups open it."
  type        = number
  default     = 3128
}

variable "kubernetes_version" {
  description = "The EKS Kubernetes version."
  type        = string
  default     = "1.33"
}

variable "vpc_cidr_block" {
  description = "The VPC's IPv4 range."
  type        = string
  default     = "10.42.0.0/16"
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: no route out (air-gapped)."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "EC2 instance types of the gateway node group."
  type        = list(string)
  default     = ["m7i.large"]
}

variable "node_disk_size_gb" {
  description = "Root volume size of every node, in GiB (encrypted with the customer-managed key)."
  type        = number
  default     = 50
}

variable "system_node_count" {
  description = "Nodes of the system group (the cluster's add-ons and the agents)."
  type        = number
  default     = 2
}

variable "node_count_min" {
  description = "Gateway nodes the group keeps at least (2 or more for a highly available gateway)."
  type        = number
  default     = 2
}

variable "node_count_max" {
  description = "Gateway nodes the group may grow to."
  type        = number
  default     = 4
}

variable "kms_rotation_period_days" {
  description = "Days between automatic rotations of the customer-managed key (90-2560)."
  type        = number
  default     = 365
}

variable "archive_bucket_name" {
  description = "The WORM audit archive bucket's name (globally unique)."
  type        = string
}

variable "archive_lock_mode" {
  description = "S3 Object Lock mode of the archive: COMPLIANCE or GOVERNANCE."
  type        = string
  default     = "COMPLIANCE"
}

variable "archive_retention_days" {
  description = "Days every archived object is locked."
  type        = number
  default     = 2190
}

variable "siem_destination_arn" {
  description = "The customer's SIEM intake (Kinesis data stream or Firehose ARN); null keeps the events in CloudWatch."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the control plane's logs and the SIEM log group (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 400

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "admin_principal_arns" {
  description = "IAM principals that may assume the administrators' role (with MFA)."
  type        = list(string)
  default     = []
}

variable "admin_access_policy" {
  description = "The EKS access policy of the administrators' role on the whole cluster (e.g. AmazonEKSClusterAdminPolicy, AmazonEKSAdminPolicy, AmazonEKSViewPolicy)."
  type        = string
  default     = "AmazonEKSClusterAdminPolicy"

  validation {
    condition     = contains(["AmazonEKSClusterAdminPolicy", "AmazonEKSAdminPolicy", "AmazonEKSEditPolicy", "AmazonEKSViewPolicy"], var.admin_access_policy)
    error_message = "admin_access_policy must be AmazonEKSClusterAdminPolicy, AmazonEKSAdminPolicy, AmazonEKSEditPolicy or AmazonEKSViewPolicy."
  }
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
