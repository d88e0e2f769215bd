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

variable "master_cidr_block" {
  description = "The private control plane's /28 (the cluster's master_ipv4_cidr_block): the deny lets nodes reach it on 443."
  type        = string
  default     = "172.16.0.32/28"

  validation {
    condition     = can(cidrnetmask(var.master_cidr_block)) && try(split("/", var.master_cidr_block)[1] == "28", false)
    error_message = "master_cidr_block must be an IPv4 /28, e.g. 172.16.0.32/28."
  }
}

variable "egress_proxy_port" {
  description = "The port the egress proxy listens on: the chart's egressProxy.port (3128)."
  type        = number
  default     = 3128
}

variable "egress_proxy_tag" {
  description = "The network tag of the nodes that run the egress proxy (the gateway's node pool only, which is tainted for it)."
  type        = string
  default     = "meshguard-egress-proxy"
}
