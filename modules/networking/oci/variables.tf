variable "name" {
  description = "Name of the VCN and prefix of its parts."
  type        = string
}

variable "compartment_id" {
  description = "The compartment the network goes in."
  type        = string
}

variable "cidr_block" {
  description = "The VCN's range; the private subnet (nodes, API endpoint) is its first /20 (for a /16), the pod subnet its second /18."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr_block))
    error_message = "cidr_block must be an IPv4 CIDR block, e.g. 10.42.0.0/16."
  }
}

variable "dns_label" {
  description = "The VCN's DNS label (letters and digits, up to 15)."
  type        = string
  default     = "meshguard"
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

variable "egress_proxy_port" {
  description = "The port the egress proxy listens on: the chart's egressProxy.port (3128)."
  type        = number
  default     = 3128
}

variable "tags" {
  description = "Freeform tags for every resource."
  type        = map(string)
  default     = {}
}
