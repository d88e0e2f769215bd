output "workspace_id" {
  description = "The Log Analytics workspace's id (the cluster's monitoring add-on sends to it)."
  value       = azurerm_log_analytics_workspace.this.id
  depends_on  = [azurerm_private_endpoint.monitor]
}
