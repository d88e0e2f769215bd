# The WORM audit archive: a storage account (HTTPS and TLS 1.2 only, no shared keys, no public
# blobs, no public network access: a private endpoint for the blob service, infrastructure
# encryption, the customer-managed key through its own identity) with a
# container whose time-based immutability policy keeps every blob retention_days (locked: it
# can then only be extended).
resource "azurerm_user_assigned_identity" "storage" {
  name                = "${var.storage_account_name}-cmk"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_role_assignment" "storage_key" {
  scope                = var.key_vault_id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.storage.principal_id
}

resource "azurerm_storage_account" "this" {
  name                              = var.storage_account_name
  location                          = var.region
  resource_group_name               = var.resource_group_name
  account_tier                      = "Standard"
  account_kind                      = "StorageV2"
  account_replication_type          = var.replication_type
  https_traffic_only_enabled        = true
  min_tls_version                   = "TLS1_2"
  allow_nested_items_to_be_public   = false
  shared_access_key_enabled         = false
  public_network_access_enabled     = false
  infrastructure_encryption_enabled = true
  tags                              = var.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.storage.id]
  }

  customer_managed_key {
    key_vault_key_id          = var.key_id
    user_assigned_identity_id = azurerm_user_assigned_identity.storage.id
  }

  blob_properties {
    versioning_enabled = true
  }

  depends_on = [azurerm_role_assignment.storage_key]
}

# Public network access is off: the gateway reaches the blob service through this endpoint.
resource "azurerm_private_endpoint" "blob" {
  count               = var.private_endpoint_subnet_id == null ? 0 : 1
  name                = "${var.storage_account_name}-blob"
  location            = var.region
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "${var.storage_account_name}-blob"
    private_connection_resource_id = azurerm_storage_account.this.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  dynamic "private_dns_zone_group" {
    for_each = var.private_dns_zone_id == null ? [] : [var.private_dns_zone_id]
    content {
      name                 = "blob"
      private_dns_zone_ids = [private_dns_zone_group.value]
    }
  }
}

resource "azurerm_storage_container" "this" {
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

resource "azurerm_storage_container_immutability_policy" "this" {
  storage_container_resource_manager_id = azurerm_storage_container.this.id
  immutability_period_in_days           = var.retention_days
  protected_append_writes_enabled       = true
  locked                                = var.lock_retention
}

# count, not for_each: a writer is often an identity made in the same apply, whose id is
# unknown at plan time, and for_each keys must be known then.
resource "azurerm_role_assignment" "writers" {
  count                = length(var.writer_principal_ids)
  scope                = azurerm_storage_container.this.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.writer_principal_ids[count.index]
}
