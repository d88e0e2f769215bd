# Workload identity for the gateway: a user-assigned managed identity that the gateway's
# Kubernetes service account becomes through a federated credential on the cluster's OIDC
# issuer (no secret exists); and the administrators: a Microsoft Entra group given the cluster
# admin role through Azure RBAC and the cluster user role that fetches the kubeconfig (local
# accounts are off in the azure module).
resource "azurerm_user_assigned_identity" "gateway" {
  name                = "${var.name}-gateway"
  location            = var.region
  resource_group_name = var.resource_group_name
  tags                = var.tags
}

resource "azurerm_federated_identity_credential" "gateway" {
  name                = "${var.name}-gateway"
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.gateway.id
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${var.namespace}:${var.service_account}"
  audience            = ["api://AzureADTokenExchange"]
}

resource "azurerm_role_assignment" "admins" {
  for_each             = toset(var.admin_group_object_ids)
  scope                = var.cluster_id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = each.value
}

# Fetching the cluster's (Entra ID) kubeconfig, az aks get-credentials, needs this role too.
resource "azurerm_role_assignment" "admins_kubeconfig" {
  for_each             = toset(var.admin_group_object_ids)
  scope                = var.cluster_id
  role_definition_name = "Azure Kubernetes Service Cluster User Role"
  principal_id         = each.value
}
