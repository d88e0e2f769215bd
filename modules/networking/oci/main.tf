# Private networking: a VCN with a private subnet (no public IPs, no internet ingress), OCI
# services through a service gateway, and the only way out the egress proxy's network security
# group, to the allowlisted destinations on 443 through a NAT gateway (only when egress_cidrs is
# not empty). The workloads' group may reach only the proxy and the VCN.
data "oci_core_services" "all" {
  filter {
    name   = "name"
    values = ["All .* Services In Oracle Services Network"]
    regex  = true
  }
}

resource "oci_core_vcn" "this" {
  compartment_id = var.compartment_id
  display_name   = var.name
  cidr_blocks    = [var.cidr_block]
  dns_label      = var.dns_label
  freeform_tags  = var.tags
}

resource "oci_core_service_gateway" "this" {
  compartment_id = var.compartment_id
  vcn_id         = oci_core_vcn.this.id
  display_name   = "${var.name}-services"
  freeform_tags  = var.tags

  services {
    service_id = data.oci_core_services.all.services[0].id
  }
}

resource "oci_core_nat_gateway" "this" {
  count          = length(var.egress_cidrs) > 0 ? 1 : 0
  compartment_id = var.compartment_id
  vcn_id         = oci_core_vcn.this.id
  display_name   = "${var.name}-egress"
  freeform_tags  = var.tags
}

resource "oci_core_route_table" "private" {
  compartment_id = var.compartment_id
  vcn_id         = oci_core_vcn.this.id
  display_name   = "${var.name}-private"
  freeform_tags  = var.tags

  route_rules {
    destination       = data.oci_core_services.all.services[0].cidr_block
    destination_type  = "SERVICE_CIDR_BLOCK"
    network_entity_id = oci_core_service_gateway.this.id
  }

  dynamic "route_rules" {
    for_each = length(var.egress_cidrs) > 0 ? var.egress_cidrs : []
    content {
      destination       = route_rules.value
      destination_type  = "CIDR_BLOCK"
      network_entity_id = oci_core_nat_gateway.this[0].id
    }
  }
}

resource "oci_core_subnet" "private" {
  compartment_id             = var.compartment_id
  vcn_id                     = oci_core_vcn.this.id
  display_name               = "${var.name}-private"
  cidr_block                 = cidrsubnet(var.cidr_block, 4, 0)
  route_table_id             = oci_core_route_table.private.id
  prohibit_public_ip_on_vnic = true
  prohibit_internet_ingress  = true
  dns_label                  = "private"
  freeform_tags              = var.tags
}

resource "oci_core_network_security_group" "workloads" {
  compartment_id = var.compartment_id
  vcn_id         = oci_core_vcn.this.id
  display_name   = "${var.name}-workloads"
  freeform_tags  = var.tags
}

resource "oci_core_network_security_group" "egress_proxy" {
  compartment_id = var.compartment_id
  vcn_id         = oci_core_vcn.this.id
  display_name   = "${var.name}-egress-proxy"
  freeform_tags  = var.tags
}

resource "oci_core_network_security_group_security_rule" "workloads_inside" {
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "EGRESS"
  protocol                  = "all"
  destination               = var.cidr_block
  destination_type          = "CIDR_BLOCK"
  description               = "inside the VCN, the egress proxy included"
}

resource "oci_core_network_security_group_security_rule" "workloads_services" {
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "EGRESS"
  protocol                  = "6"
  destination               = data.oci_core_services.all.services[0].cidr_block
  destination_type          = "SERVICE_CIDR_BLOCK"
  description               = "OCI services through the service gateway"
}

resource "oci_core_network_security_group_security_rule" "proxy_allowlist" {
  for_each                  = toset(var.egress_cidrs)
  network_security_group_id = oci_core_network_security_group.egress_proxy.id
  direction                 = "EGRESS"
  protocol                  = "6"
  destination               = each.value
  destination_type          = "CIDR_BLOCK"
  description               = "an allowlisted destination"

  tcp_options {
    destination_port_range {
      min = 443
      max = 443
    }
  }
}
