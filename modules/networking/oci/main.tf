# Private networking: a VCN with a private subnet for the nodes and the API endpoint and a pod
# subnet (VCN-native pod networking), neither with public IPs or internet ingress; OCI services
# (the registry, IAM, Vault, Logging) through a service gateway; and the only way out the egress
# proxy's network security group, to the allowlisted destinations on 443 through a NAT gateway
# (only when egress_cidrs is not empty). The workloads' group is the cluster's default-deny rule
# set: it lists each path OKE needs (below).
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

resource "oci_core_subnet" "pods" {
  compartment_id             = var.compartment_id
  vcn_id                     = oci_core_vcn.this.id
  display_name               = "${var.name}-pods"
  cidr_block                 = cidrsubnet(var.cidr_block, 2, 1)
  route_table_id             = oci_core_route_table.private.id
  prohibit_public_ip_on_vnic = true
  prohibit_internet_ingress  = true
  dns_label                  = "pods"
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
  description               = "OCI services through the service gateway: the registry (OCIR), IAM, Vault, Logging"
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

# The control plane: worker nodes and pods reach the Kubernetes API endpoint (6443) and its
# node-registration port (12250); the control plane reaches the kubelets (10250).
resource "oci_core_network_security_group_security_rule" "workloads_control_plane" {
  for_each                  = { api = 6443, registration = 12250, kubelet = 10250 }
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source                    = oci_core_network_security_group.workloads.id
  source_type               = "NETWORK_SECURITY_GROUP"
  description               = "OKE control plane: ${each.key} (${each.value})"

  tcp_options {
    destination_port_range {
      min = each.value
      max = each.value
    }
  }
}

# Pods (VCN-native: each has its own address in the pod subnet) reach one another and the nodes.
resource "oci_core_network_security_group_security_rule" "workloads_from_pods" {
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "INGRESS"
  protocol                  = "all"
  source                    = oci_core_subnet.pods.cidr_block
  source_type               = "CIDR_BLOCK"
  description               = "pods of the cluster"
}

# Path MTU discovery inside the VCN.
resource "oci_core_network_security_group_security_rule" "workloads_path_mtu" {
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "INGRESS"
  protocol                  = "1"
  source                    = var.cidr_block
  source_type               = "CIDR_BLOCK"
  description               = "ICMP fragmentation needed"

  icmp_options {
    type = 3
    code = 4
  }
}

# DNS: the VCN resolver at 169.254.169.254.
resource "oci_core_network_security_group_security_rule" "workloads_dns" {
  network_security_group_id = oci_core_network_security_group.workloads.id
  direction                 = "EGRESS"
  protocol                  = "17"
  destination               = "169.254.169.254/32"
  destination_type          = "CIDR_BLOCK"
  description               = "the VCN resolver (DNS)"

  udp_options {
    destination_port_range {
      min = 53
      max = 53
    }
  }
}

# Agents reach the egress proxy (the gateway's pods) on its port.
resource "oci_core_network_security_group_security_rule" "proxy_from_workloads" {
  network_security_group_id = oci_core_network_security_group.egress_proxy.id
  direction                 = "INGRESS"
  protocol                  = "6"
  source                    = var.cidr_block
  source_type               = "CIDR_BLOCK"
  description               = "agents' CONNECT requests"

  tcp_options {
    destination_port_range {
      min = var.egress_proxy_port
      max = var.egress_proxy_port
    }
  }
}
