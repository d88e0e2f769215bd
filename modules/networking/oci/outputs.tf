output "vcn_id" {
  description = "The VCN's OCID."
  value       = oci_core_vcn.this.id
}

output "private_subnet_id" {
  description = "The private subnet."
  value       = oci_core_subnet.private.id
}

output "pods_subnet_id" {
  description = "The pod subnet (VCN-native pod networking)."
  value       = oci_core_subnet.pods.id
}

output "workloads_nsg_id" {
  description = "Attach to the API endpoint, every node and every pod: the control plane's ports, DNS, inside the VCN and OCI services."
  value       = oci_core_network_security_group.workloads.id
}

output "egress_proxy_nsg_id" {
  description = "Attach to the egress proxy's nodes: HTTPS out to the allowlisted destinations."
  value       = oci_core_network_security_group.egress_proxy.id
}
