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
  description = "The port the egress proxy listens on: the chart's egressProxy.port (3128)."
  type        = number
  default     = 3128
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints in the private subnets (a fully private EKS cluster needs ec2, ecr.api, ecr.dkr, sts, eks and logs; S3 has its gateway endpoint)."
  type        = list(string)
  default     = ["ec2", "ecr.api", "ecr.dkr", "sts", "eks", "kms", "logs"]
}

variable "kms_key_arn" {
  description = "The customer-managed key that encrypts the flow logs' log group (the kms module's key_arn)."
  type        = string
}

variable "flow_log_retention_days" {
  description = "Days CloudWatch keeps the VPC flow logs (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 400

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
