variable "name" {
  description = "The install's name: resource group, cluster, network and identity names derive from it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,40}$", var.name))
    error_message = "name must be 2-41 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning): set it to the region the license names, e.g. germanywestcentral."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+[a-z0-9]*$", var.region))
    error_message = "region must be an Azure location name without spaces, e.g. germanywestcentral."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed in."
  type        = string
  default     = "meshguard"
}

variable "service_account" {
  description = "The gateway's Kubernetes service account: the federated credential names it, and helm_values sets the chart's serviceAccount.name to it."
  type        = string
  default     = "meshguard-gateway"
}

variable "egress_proxy_port" {
  description = "The egress proxy's port: the chart's egressProxy.port (3128); the security group opens it to the agents."
  type        = number
  default     = 3128
}

variable "kubernetes_version" {
  description = "The AKS Kubernetes version (null: the region's default)."
  type        = string
  default     = null
}

variable "vnet_cidr_block" {
  description = "The virtual network's range."
  type        = string
  default     = "10.42.0.0/16"
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: none (the nodes keep only the cluster's own paths out)."
  type        = list(string)
  default     = []
}

variable "system_vm_size" {
  description = "The system node pool's VM size."
  type        = string
  default     = "Standard_D4s_v5"
}

variable "gateway_vm_size" {
  description = "The gateway node pool's VM size."
  type        = string
  default     = "Standard_D4s_v5"
}

variable "node_count_min" {
  description = "Gateway nodes the pool keeps at least."
  type        = number
  default     = 2
}

variable "node_count_max" {
  description = "Gateway nodes the pool may grow to."
  type        = number
  default     = 6
}

variable "key_vault_name" {
  description = "The Key Vault's name (3-24 characters, globally unique)."
  type        = string
}

variable "deployer_ip_ranges" {
  description = "Public addresses of whoever runs Terraform, let through the key vault's firewall to create the key; empty (the default): the vault has no public access, and Terraform must run inside the network."
  type        = list(string)
  default     = []
}

variable "bootstrap_container_registry_id" {
  description = "An Azure Container Registry (Premium, private endpoint) that caches the node bootstrap artifacts (AKS bootstrap_profile, artifact source Cache); null: nodes fetch them from the Microsoft Container Registry through the NAT gateway."
  type        = string
  default     = null
}

variable "kms_rotation_period_days" {
  description = "Days between automatic rotations of the customer-managed key."
  type        = number
  default     = 365
}

variable "archive_storage_account_name" {
  description = "The WORM archive storage account's name (3-24 lowercase letters and digits, globally unique)."
  type        = string
}

variable "archive_retention_days" {
  description = "Days every archived blob is immutable."
  type        = number
  default     = 2190
}

variable "siem_event_hub_id" {
  description = "The customer's Event Hub for an external SIEM; null exports nothing."
  type        = string
  default     = null
}

variable "sentinel" {
  description = "Onboard the workspace to Microsoft Sentinel."
  type        = bool
  default     = false
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
