# Private networking: workloads in private subnets with no route to the internet; the only way
# out is the MeshGuard egress proxy, whose security group alone may open HTTPS to the
# allowlisted destinations, through a NAT gateway (when egress_cidrs is not empty). AWS APIs are
# reached through private endpoints; every flow is logged.
data "aws_availability_zones" "available" {
  region = var.region
  state  = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)
}

resource "aws_vpc" "this" {
  region               = var.region
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "private" {
  count             = var.az_count
  region            = var.region
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, 4, count.index)
  tags              = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route_table" "private" {
  region = var.region
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route_table_association" "private" {
  count          = var.az_count
  region         = var.region
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# The egress path: one public subnet with a NAT gateway, used only by the egress proxy's
# allowlisted traffic (the security groups below enforce who may use it).
resource "aws_subnet" "egress" {
  count                   = local.egress ? 1 : 0
  region                  = var.region
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[0]
  cidr_block              = cidrsubnet(var.cidr_block, 8, 255)
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "${var.name}-egress" })
}

locals {
  egress = length(var.egress_cidrs) > 0
}

resource "aws_internet_gateway" "this" {
  count  = local.egress ? 1 : 0
  region = var.region
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_eip" "nat" {
  count  = local.egress ? 1 : 0
  region = var.region
  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  count         = local.egress ? 1 : 0
  region        = var.region
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.egress[0].id
  tags          = merge(var.tags, { Name = var.name })
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "egress" {
  count  = local.egress ? 1 : 0
  region = var.region
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this[0].id
  }
  tags = merge(var.tags, { Name = "${var.name}-egress" })
}

resource "aws_route_table_association" "egress" {
  count          = local.egress ? 1 : 0
  region         = var.region
  subnet_id      = aws_subnet.egress[0].id
  route_table_id = aws_route_table.egress[0].id
}

resource "aws_route" "allowlisted" {
  for_each               = toset(var.egress_cidrs)
  region                 = var.region
  route_table_id         = aws_route_table.private.id
  destination_cidr_block = each.value
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

# The workloads' group is a default-deny egress rule set (Terraform removes the allow-all rule
# AWS adds): the EKS control plane's network interfaces and every node carry it, so the paths
# the cluster needs are listed here, each once: inside the group (control plane <-> kubelet,
# node <-> node, pods), the VPC's resolver, the private endpoints (ECR, STS, EKS, EC2, KMS, Logs)
# and S3 through its gateway endpoint (ECR keeps image layers there); besides, only the egress
# proxy.
resource "aws_security_group" "workloads" {
  region      = var.region
  name        = "${var.name}-workloads"
  description = "MeshGuard workloads: out only to the egress proxy and the private endpoints"
  vpc_id      = aws_vpc.this.id
  tags        = var.tags
}

resource "aws_security_group" "egress_proxy" {
  region      = var.region
  name        = "${var.name}-egress-proxy"
  description = "The MeshGuard egress proxy: HTTPS out to the allowlisted destinations only"
  vpc_id      = aws_vpc.this.id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "workloads_to_cluster" {
  region                       = var.region
  security_group_id            = aws_security_group.workloads.id
  referenced_security_group_id = aws_security_group.workloads.id
  ip_protocol                  = "-1"
  description                  = "control plane (443) and kubelets (10250), nodes and pods of the cluster"
}

resource "aws_vpc_security_group_ingress_rule" "workloads_from_cluster" {
  region                       = var.region
  security_group_id            = aws_security_group.workloads.id
  referenced_security_group_id = aws_security_group.workloads.id
  ip_protocol                  = "-1"
  description                  = "control plane (443) and kubelets (10250), nodes and pods of the cluster"
}

resource "aws_vpc_security_group_egress_rule" "workloads_dns" {
  for_each          = toset(["udp", "tcp"])
  region            = var.region
  security_group_id = aws_security_group.workloads.id
  cidr_ipv4         = var.cidr_block
  ip_protocol       = each.value
  from_port         = 53
  to_port           = 53
  description       = "the VPC's resolver (DNS)"
}

resource "aws_vpc_security_group_egress_rule" "workloads_to_proxy" {
  region                       = var.region
  security_group_id            = aws_security_group.workloads.id
  referenced_security_group_id = aws_security_group.egress_proxy.id
  ip_protocol                  = "tcp"
  from_port                    = var.egress_proxy_port
  to_port                      = var.egress_proxy_port
  description                  = "to the egress proxy"
}

resource "aws_vpc_security_group_egress_rule" "workloads_to_endpoints" {
  region            = var.region
  security_group_id = aws_security_group.workloads.id
  cidr_ipv4         = var.cidr_block
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "to the VPC's private endpoints: ECR, STS, EKS, EC2, KMS, Logs"
}

resource "aws_vpc_security_group_egress_rule" "workloads_to_s3" {
  region            = var.region
  security_group_id = aws_security_group.workloads.id
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "S3 through the gateway endpoint (ECR image layers, the archive)"
}

resource "aws_vpc_security_group_ingress_rule" "proxy_from_workloads" {
  region                       = var.region
  security_group_id            = aws_security_group.egress_proxy.id
  referenced_security_group_id = aws_security_group.workloads.id
  ip_protocol                  = "tcp"
  from_port                    = var.egress_proxy_port
  to_port                      = var.egress_proxy_port
  description                  = "agents' CONNECT requests"
}

resource "aws_vpc_security_group_egress_rule" "proxy_to_allowlist" {
  for_each          = toset(var.egress_cidrs)
  region            = var.region
  security_group_id = aws_security_group.egress_proxy.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "an allowlisted destination"
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_vpc" {
  region            = var.region
  security_group_id = aws_security_group.endpoints.id
  cidr_ipv4         = var.cidr_block
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "HTTPS from the VPC"
}

resource "aws_security_group" "endpoints" {
  region      = var.region
  name        = "${var.name}-endpoints"
  description = "Private endpoints of AWS APIs"
  vpc_id      = aws_vpc.this.id
  tags        = var.tags
}

resource "aws_vpc_endpoint" "s3" {
  region            = var.region
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = var.tags
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(var.interface_endpoints)
  region              = var.region
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${var.region}.${each.value}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  tags                = var.tags
}

# VPC flow logs: every accepted and rejected flow, to a log group encrypted with the
# customer-managed key (a refused egress attempt is evidence).
resource "aws_cloudwatch_log_group" "flow_logs" {
  region            = var.region
  name              = "/meshguard/${var.name}/vpc-flow-logs"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogGroups", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.flow_logs.arn, "${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "this" {
  region               = var.region
  vpc_id               = aws_vpc.this.id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn
  tags                 = var.tags
  depends_on           = [aws_iam_role_policy.flow_logs]
}
