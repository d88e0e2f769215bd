output "vnet_id" {
  description = "The virtual network's id."
  value       = azurerm_virtual_network.this.id
}

output "nodes_subnet_id" {
  description = "The cluster nodes' subnet."
  value       = azurerm_subnet.nodes.id
}

output "endpoints_subnet_id" {
  description = "The subnet for private endpoints."
  value       = azurerm_subnet.endpoints.id
}

output "egress_proxy_asg_id" {
  description = "The application security group of the nodes that run the egress proxy."
  value       = azurerm_application_security_group.egress_proxy.id
}
