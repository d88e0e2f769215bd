output "resource_group_name" {
  description = "The install's resource group."
  value       = azurerm_resource_group.this.name
}

output "cluster_name" {
  description = "The AKS cluster: az aks get-credentials --name NAME --resource-group RG (from inside the network)."
  value       = azurerm_kubernetes_cluster.this.name
}

output "key_id" {
  description = "The customer-managed key (versionless)."
  value       = module.kms.key_id
}

output "archive_container_id" {
  description = "The WORM audit archive container."
  value       = module.archive.container_id
}

output "workspace_id" {
  description = "The Log Analytics workspace."
  value       = module.siem.workspace_id
}

output "gateway_client_id" {
  description = "The chart's serviceAccount annotation azure.workload.identity/client-id."
  value       = module.identity.gateway_client_id
}

output "namespace" {
  description = "The namespace to install the chart in (helm --namespace): the one the federated credential names."
  value       = var.namespace
}

output "helm_values" {
  description = "The chart's values this install fixes (helm --values): the service account with its workload identity annotation and pod label, the egress proxy's port, the region, the allowlisted destinations the NetworkPolicy lets the gateway reach, and the gateway pool's node selector and toleration."
  value = {
    serviceAccount = {
      name        = var.service_account
      annotations = { "azure.workload.identity/client-id" = module.identity.gateway_client_id }
    }
    podLabels     = { "azure.workload.identity/use" = "true" }
    egressProxy   = { port = var.egress_proxy_port, regions = [var.region] }
    license       = { region = var.region }
    networkPolicy = { egressTo = [for c in var.egress_cidrs : { ipBlock = { cidr = c } }] }
    nodeSelector  = local.gateway_node_label
    tolerations   = [{ key = "meshguard.io/role", operator = "Equal", value = "gateway", effect = "NoSchedule" }]
  }
}
