# Private networking: workloads in private subnets with no route to the internet; the only way
# out is the MeshGuard egress proxy, whose security group alone may open HTTPS to the
# allowlisted destinations, through a NAT gateway (when egress_cidrs is not empty). AWS APIs are
# reached through private endpoints.
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
  description       = "to the VPC's private endpoints"
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
