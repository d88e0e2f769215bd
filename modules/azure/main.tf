# One dedicated tenant or customer-operated install on Azure: a resource group in the pinned
# region, private network with the egress path through the egress proxy, the customer-managed
# key, the WORM audit archive, the workspace feeding the SIEM, workload identity, and a private
# AKS cluster (Entra ID and Azure RBAC only, secrets encrypted with the customer-managed key in
# a private vault, the API server in the network) with a tainted pool for the gateway alone.
locals {
  tags = merge(var.tags, { "meshguard-install" = var.name })
  # The chart's values this install needs, from one place: the gateway's pods land on the
  # gateway pool, whose taint they tolerate.
  gateway_node_label = { "meshguard.io/role" = "gateway" }
  zones              = module.networking.private_dns_zone_ids
}

resource "azurerm_resource_group" "this" {
  name     = var.name
  location = var.region
  tags     = local.tags
}

module "kms" {
  source                     = "../kms/azure"
  name                       = var.key_vault_name
  region                     = var.region
  resource_group_name        = azurerm_resource_group.this.name
  rotation_period_days       = var.kms_rotation_period_days
  public_network_access      = length(var.deployer_ip_ranges) > 0
  allowed_ip_ranges          = var.deployer_ip_ranges
  private_endpoint_subnet_id = module.networking.endpoints_subnet_id
  private_dns_zone_id        = local.zones["vault"]
  user_principal_ids         = [module.identity.gateway_principal_id]
  tags                       = local.tags
}

module "networking" {
  source              = "../networking/azure"
  name                = var.name
  region              = var.region
  resource_group_name = azurerm_resource_group.this.name
  cidr_block          = var.vnet_cidr_block
  egress_cidrs        = var.egress_cidrs
  egress_proxy_port   = var.egress_proxy_port
  tags                = local.tags
}

module "archive" {
  source                     = "../archive/azure"
  storage_account_name       = var.archive_storage_account_name
  region                     = var.region
  resource_group_name        = azurerm_resource_group.this.name
  key_vault_id               = module.kms.key_vault_id
  key_id                     = module.kms.key_id
  retention_days             = var.archive_retention_days
  writer_principal_ids       = [module.identity.gateway_principal_id]
  private_endpoint_subnet_id = module.networking.endpoints_subnet_id
  private_dns_zone_id        = local.zones["blob"]
  tags                       = local.tags
}

module "siem" {
  source                     = "../siem/azure"
  name                       = "${var.name}-siem"
  region                     = var.region
  resource_group_name        = azurerm_resource_group.this.name
  event_hub_id               = var.siem_event_hub_id
  sentinel                   = var.sentinel
  private_endpoint_subnet_id = module.networking.endpoints_subnet_id
  private_dns_zone_ids       = [for k in ["monitor", "oms", "ods", "agent", "blob"] : local.zones[k]]
  tags                       = local.tags
}

module "identity" {
  source                 = "../identity/azure"
  name                   = var.name
  region                 = var.region
  resource_group_name    = azurerm_resource_group.this.name
  oidc_issuer_url        = azurerm_kubernetes_cluster.this.oidc_issuer_url
  namespace              = var.namespace
  service_account        = var.service_account
  cluster_id             = azurerm_kubernetes_cluster.this.id
  admin_group_object_ids = var.admin_group_object_ids
  tags                   = local.tags
}

# The control plane's own identity, which must be able to use the key before the cluster exists.
resource "azurerm_user_assigned_identity" "cluster" {
  name                = "${var.name}-aks"
  location            = var.region
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "cluster_key" {
  scope                = module.kms.key_vault_id
  role_definition_name = "Key Vault Crypto User"
  principal_id         = azurerm_user_assigned_identity.cluster.principal_id
}

# KMS with a private key vault: AKS links the vault to the API server's network itself, as the
# cluster's identity.
resource "azurerm_role_assignment" "cluster_key_vault" {
  scope                = module.kms.key_vault_id
  role_definition_name = "Key Vault Contributor"
  principal_id         = azurerm_user_assigned_identity.cluster.principal_id
}

resource "azurerm_role_assignment" "cluster_network" {
  scope                = module.networking.vnet_id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_user_assigned_identity.cluster.principal_id
}

resource "azurerm_kubernetes_cluster" "this" {
  name                      = var.name
  location                  = var.region
  resource_group_name       = azurerm_resource_group.this.name
  dns_prefix                = var.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = "Standard"
  private_cluster_enabled   = true
  local_account_disabled    = true
  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  automatic_upgrade_channel = "patch"
  tags                      = local.tags

  # The cluster's add-ons, the archive job and the agents; the gateway has its own pool.
  default_node_pool {
    name                    = "system"
    vm_size                 = var.system_vm_size
    node_count              = 3
    zones                   = ["1", "2", "3"]
    vnet_subnet_id          = module.networking.nodes_subnet_id
    host_encryption_enabled = true
  }

  # The API server runs in the network (its delegated subnet), so that it reaches the private
  # key vault through its private endpoint and the nodes reach it without leaving the network.
  api_server_access_profile {
    virtual_network_integration_enabled = true
    subnet_id                           = module.networking.apiserver_subnet_id
  }

  dynamic "bootstrap_profile" {
    for_each = var.bootstrap_container_registry_id == null ? [] : [var.bootstrap_container_registry_id]
    content {
      artifact_source       = "Cache"
      container_registry_id = bootstrap_profile.value
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cluster.id]
  }

  key_management_service {
    key_vault_key_id         = module.kms.key_version_id
    key_vault_network_access = "Private"
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    admin_group_object_ids = var.admin_group_object_ids
  }

  network_profile {
    network_plugin = "azure"
    network_policy = "azure"
    outbound_type  = "userAssignedNATGateway"
  }

  oms_agent {
    log_analytics_workspace_id      = module.siem.workspace_id
    msi_auth_for_monitoring_enabled = true
  }

  depends_on = [
    azurerm_role_assignment.cluster_key,
    azurerm_role_assignment.cluster_key_vault,
    azurerm_role_assignment.cluster_network,
  ]
}

# The control plane's audit logs (kube-audit, kube-audit-admin) and Entra ID sign-ins (guard)
# to the install's workspace.
resource "azurerm_monitor_diagnostic_setting" "cluster" {
  name                       = "${var.name}-kube-audit"
  target_resource_id         = azurerm_kubernetes_cluster.this.id
  log_analytics_workspace_id = module.siem.workspace_id

  dynamic "enabled_log" {
    for_each = toset(["kube-audit", "kube-audit-admin", "guard"])
    content {
      category = enabled_log.value
    }
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "gateway" {
  name                    = "gateway"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.this.id
  vm_size                 = var.gateway_vm_size
  auto_scaling_enabled    = true
  min_count               = var.node_count_min
  max_count               = var.node_count_max
  zones                   = ["1", "2", "3"]
  vnet_subnet_id          = module.networking.nodes_subnet_id
  host_encryption_enabled = true
  node_labels             = local.gateway_node_label
  node_taints             = ["meshguard.io/role=gateway:NoSchedule"]
  tags                    = local.tags

  node_network_profile {
    application_security_group_ids = [module.networking.egress_proxy_asg_id]
  }
}
