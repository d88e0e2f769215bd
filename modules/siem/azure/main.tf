# The gateway's audit and alert stream lands in a Log Analytics workspace (container insights
# collects the pods' output) kept retention_days, reachable only through Azure Private Link (an
# Azure Monitor private link scope and its private endpoint: internet ingestion and query are
# off); it is exported, as it arrives, to the customer's Event Hub for an external SIEM, and can
# be onboarded to Microsoft Sentinel.
resource "azurerm_log_analytics_workspace" "this" {
  name                         = var.name
  location                     = var.region
  resource_group_name          = var.resource_group_name
  sku                          = "PerGB2018"
  retention_in_days            = var.retention_days
  local_authentication_enabled = false
  internet_ingestion_enabled   = false
  internet_query_enabled       = false
  tags                         = var.tags
}

resource "azurerm_log_analytics_data_export_rule" "siem" {
  count                   = var.event_hub_id == null ? 0 : 1
  name                    = "meshguard-to-siem"
  resource_group_name     = var.resource_group_name
  workspace_resource_id   = azurerm_log_analytics_workspace.this.id
  destination_resource_id = var.event_hub_id
  table_names             = var.tables
  enabled                 = true
}

resource "azurerm_sentinel_log_analytics_workspace_onboarding" "this" {
  count        = var.sentinel ? 1 : 0
  workspace_id = azurerm_log_analytics_workspace.this.id
}

resource "azurerm_monitor_private_link_scope" "this" {
  name                  = "${var.name}-ampls"
  resource_group_name   = var.resource_group_name
  ingestion_access_mode = "PrivateOnly"
  query_access_mode     = "PrivateOnly"
  tags                  = var.tags
}

resource "azurerm_monitor_private_link_scoped_service" "workspace" {
  name                = "${var.name}-workspace"
  resource_group_name = var.resource_group_name
  scope_name          = azurerm_monitor_private_link_scope.this.name
  linked_resource_id  = azurerm_log_analytics_workspace.this.id
}

resource "azurerm_private_endpoint" "monitor" {
  count               = var.private_endpoint_subnet_id == null ? 0 : 1
  name                = "${var.name}-ampls"
  location            = var.region
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "${var.name}-ampls"
    private_connection_resource_id = azurerm_monitor_private_link_scope.this.id
    subresource_names              = ["azuremonitor"]
    is_manual_connection           = false
  }

  dynamic "private_dns_zone_group" {
    for_each = length(var.private_dns_zone_ids) == 0 ? [] : [var.private_dns_zone_ids]
    content {
      name                 = "azuremonitor"
      private_dns_zone_ids = private_dns_zone_group.value
    }
  }

  depends_on = [azurerm_monitor_private_link_scoped_service.workspace]
}
