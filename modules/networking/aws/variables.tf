variable "name" {
  description = "Name of the VPC and prefix of its parts."
  type        = string
}

variable "region" {
  description = "The AWS region every resource of this module is created in (region pinning)."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 range; private subnets are its first /20s (for a /16), the egress subnet its last /24."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr_block))
    error_message = "cidr_block must be an IPv4 CIDR block, e.g. 10.42.0.0/16."
  }
}

variable "az_count" {
  description = "Availability zones to spread the private subnets over (2-4)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4."
  }
}

variable "egress_cidrs" {
  description = "Destinations the egress proxy may reach (the egress allowlist's addresses, as CIDRs); empty: no route out at all (air-gapped)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.egress_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "egress_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0: list the allowlisted destinations."
  }
}

variable "egress_proxy_port" {
  description = "The port the egress proxy listens on (the chart's egressProxy.port)."
  type        = number
  default     = 3102
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints in the private subnets."
  type        = list(string)
  default     = ["kms", "logs", "sts", "ecr.api", "ecr.dkr", "eks"]
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
