# The gateway's audit and alert stream lands in a Log Analytics workspace (container insights
# collects the pods' output) kept retention_days, reachable only through Azure Private Link; it
# is exported, as it arrives, to the customer's Event Hub for an external SIEM, and can be
# onboarded to Microsoft Sentinel.
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
