output "storage_account_id" {
  description = "The archive storage account's id."
  value       = azurerm_storage_account.this.id
}

output "container_id" {
  description = "The archive container's resource manager id."
  value       = azurerm_storage_container.this.id
}
