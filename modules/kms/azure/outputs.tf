output "key_vault_id" {
  description = "The Key Vault's id."
  value       = azurerm_key_vault.this.id
}

output "key_id" {
  description = "The key's versionless id, what customer-managed-key settings take so they follow rotations."
  value       = azurerm_key_vault_key.this.versionless_id
}

output "key_name" {
  description = "The key's name."
  value       = azurerm_key_vault_key.this.name
}

output "key_version_id" {
  description = "The key's current version id (AKS secrets encryption takes a versioned key)."
  value       = azurerm_key_vault_key.this.id
}
