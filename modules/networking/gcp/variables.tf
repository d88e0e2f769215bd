variable "name" {
  description = "Name of the network and prefix of its parts."
  type        = string
}

variable "project_id" {
  description = "The Google Cloud project every resource is created in."
  type        = string
}

variable "region" {
  description = "The region of the subnet and the NAT (region pinning)."
  type        = string
}

variable "cidr_block" {
  description = "The subnet's primary range (nodes)."
  type        = string
  default     = "10.42.0.0/20"

  validation {
    condition     = can(cidrnetmask(var.cidr_block))
    error_message = "cidr_block must be an IPv4 CIDR block, e.g. 10.42.0.0/20."
  }
}

variable "pods_cidr_block" {
  description = "The secondary range for the cluster's pods."
  type        = string
  default     = "10.44.0.0/14"
}

variable "services_cidr_block" {
  description = "The secondary range for the cluster's services."
  type        = string
  default     = "10.48.0.0/20"
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach, as CIDRs; empty: no route out (air-gapped)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.egress_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "egress_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0: list the allowlisted destinations."
  }
}

variable "egress_proxy_tag" {
  description = "The network tag of the nodes that run the egress proxy."
  type        = string
  default     = "meshguard-egress-proxy"
}
