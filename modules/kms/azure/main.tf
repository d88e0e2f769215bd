# The customer-managed key: a Key Vault (RBAC authorisation, purge protection, no public network
# access) holding an RSA key that Key Vault rotates by itself every rotation_period_days.
data "azurerm_client_config" "current" {}

resource "azurerm_key_vault" "this" {
  name                          = var.name
  location                      = var.region
  resource_group_name           = var.resource_group_name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = var.hsm ? "premium" : "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = var.public_network_access
  tags                          = var.tags

  network_acls {
    bypass         = "AzureServices"
    default_action = "Deny"
    ip_rules       = var.allowed_ip_ranges
  }
}

resource "azurerm_key_vault_key" "this" {
  name         = var.name
  key_vault_id = azurerm_key_vault.this.id
  key_type     = var.hsm ? "RSA-HSM" : "RSA"
  key_size     = 3072
  key_opts     = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]
  tags         = var.tags

  rotation_policy {
    expire_after         = "P${var.rotation_period_days * 2}D"
    notify_before_expiry = "P30D"

    automatic {
      time_after_creation = "P${var.rotation_period_days}D"
    }
  }
}

resource "azurerm_role_assignment" "users" {
  for_each             = toset(var.user_principal_ids)
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = each.value
}
