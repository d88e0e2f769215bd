output "vnet_id" {
  description = "The virtual network's id."
  value       = azurerm_virtual_network.this.id
}

output "nodes_subnet_id" {
  description = "The cluster nodes' subnet: known once its security group (with the cluster's paths) and its NAT gateway are attached, which AKS's outbound type userAssignedNATGateway requires before the cluster."
  value       = azurerm_subnet.nodes.id
  depends_on = [
    azurerm_subnet_network_security_group_association.nodes,
    azurerm_subnet_nat_gateway_association.nodes,
    azurerm_nat_gateway_public_ip_association.this,
    azurerm_network_security_rule.inside,
    azurerm_network_security_rule.dns,
    azurerm_network_security_rule.cluster,
  ]
}

output "endpoints_subnet_id" {
  description = "The subnet for private endpoints."
  value       = azurerm_subnet.endpoints.id
}

output "egress_proxy_asg_id" {
  description = "The application security group of the nodes that run the egress proxy."
  value       = azurerm_application_security_group.egress_proxy.id
}

output "apiserver_subnet_id" {
  description = "The subnet delegated to AKS for API server VNet integration."
  value       = azurerm_subnet.apiserver.id
}

output "private_dns_zone_ids" {
  description = "The private DNS zones linked to the network, by service: vault, blob, monitor, oms, ods, agent."
  value       = { for k, z in azurerm_private_dns_zone.this : k => z.id }
  depends_on  = [azurerm_private_dns_zone_virtual_network_link.this]
}

output "nat_gateway_id" {
  description = "The nodes' NAT gateway."
  value       = azurerm_nat_gateway.this.id
}
