output "gateway_client_id" {
  description = "The chart's serviceAccount annotation azure.workload.identity/client-id."
  value       = azurerm_user_assigned_identity.gateway.client_id
}

output "gateway_principal_id" {
  description = "The gateway's identity as a principal, for the key and the archive."
  value       = azurerm_user_assigned_identity.gateway.principal_id
}
