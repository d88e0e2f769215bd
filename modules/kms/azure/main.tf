# The customer-managed key: a Key Vault (RBAC authorisation, purge protection, no public network
# access: reached through its private endpoint) holding an RSA key that Key Vault rotates by
# itself every rotation_period_days. Whoever runs Terraform gets the Crypto Officer role to
# create the key, and must reach the vault: from inside the network (through the private
# endpoint), or with public_network_access on and its address in allowed_ip_ranges.
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

resource "azurerm_role_assignment" "deployer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_private_endpoint" "vault" {
  count               = var.private_endpoint_subnet_id == null ? 0 : 1
  name                = "${var.name}-vault"
  location            = var.region
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "${var.name}-vault"
    private_connection_resource_id = azurerm_key_vault.this.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }

  dynamic "private_dns_zone_group" {
    for_each = var.private_dns_zone_id == null ? [] : [var.private_dns_zone_id]
    content {
      name                 = "vault"
      private_dns_zone_ids = [private_dns_zone_group.value]
    }
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

  depends_on = [azurerm_role_assignment.deployer, azurerm_private_endpoint.vault]
}

# count, not for_each: a principal is often an identity made in the same apply, whose id is
# unknown at plan time, and for_each keys must be known then.
resource "azurerm_role_assignment" "users" {
  count                = length(var.user_principal_ids)
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = var.user_principal_ids[count.index]
}
