variable "name" {
  description = "Name of the virtual network and prefix of its parts."
  type        = string
}

variable "region" {
  description = "The Azure location every resource is created in (region pinning)."
  type        = string
}

variable "resource_group_name" {
  description = "The resource group the network goes in."
  type        = string
}

variable "cidr_block" {
  description = "The virtual network's range; nodes take its first /20 (for a /16), the API server its /24 at 254, private endpoints its last /24."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr_block))
    error_message = "cidr_block must be an IPv4 CIDR block, e.g. 10.42.0.0/16."
  }
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: none (the cluster's own paths stay open)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.egress_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "egress_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0: list the allowlisted destinations."
  }
}

variable "egress_proxy_port" {
  description = "The port the egress proxy listens on: the chart's egressProxy.port (3128)."
  type        = number
  default     = 3128
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
