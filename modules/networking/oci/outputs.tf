output "vcn_id" {
  description = "The VCN's OCID."
  value       = oci_core_vcn.this.id
}

output "private_subnet_id" {
  description = "The private subnet."
  value       = oci_core_subnet.private.id
}

output "workloads_nsg_id" {
  description = "Attach to the gateway's and agents' nodes: out only inside the VCN and to OCI services."
  value       = oci_core_network_security_group.workloads.id
}

output "egress_proxy_nsg_id" {
  description = "Attach to the egress proxy's nodes: HTTPS out to the allowlisted destinations."
  value       = oci_core_network_security_group.egress_proxy.id
}
