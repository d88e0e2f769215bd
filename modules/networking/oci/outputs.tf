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
  description = "Attach to the API endpoint, every node and every pod: the control plane's ports, DNS, inside the VCN and OCI services. Known once the group's rules exist, so the cluster and nodes in it come after their paths."
  value       = oci_core_network_security_group.workloads.id
  depends_on = [
    oci_core_network_security_group_security_rule.workloads_inside,
    oci_core_network_security_group_security_rule.workloads_services,
    oci_core_network_security_group_security_rule.workloads_control_plane,
    oci_core_network_security_group_security_rule.workloads_from_pods,
    oci_core_network_security_group_security_rule.workloads_path_mtu,
    oci_core_network_security_group_security_rule.workloads_dns,
  ]
}

output "egress_proxy_nsg_id" {
  description = "Attach to the egress proxy's nodes: HTTPS out to the allowlisted destinations."
  value       = oci_core_network_security_group.egress_proxy.id
}
