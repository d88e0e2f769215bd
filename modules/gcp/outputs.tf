output "cluster_name" {
  description = "The GKE cluster: gcloud container clusters get-credentials NAME --region REGION --internal-ip."
  value       = google_container_cluster.this.name
}

output "cluster_endpoint" {
  description = "The private control plane's address."
  value       = google_container_cluster.this.endpoint
}

output "kms_key_id" {
  description = "The customer-managed key."
  value       = module.kms.key_id
}

output "archive_bucket" {
  description = "The WORM audit archive bucket."
  value       = module.archive.bucket
}

output "siem_subscription_id" {
  description = "The subscription the customer's SIEM pulls from."
  value       = module.siem.subscription_id
}

output "gateway_service_account" {
  description = "The chart's serviceAccount annotation iam.gke.io/gcp-service-account."
  value       = module.identity.gateway_service_account
}

output "namespace" {
  description = "The namespace to install the chart in (helm --namespace): the one Workload Identity binds."
  value       = var.namespace
}

output "helm_values" {
  description = "The chart's values this install fixes (helm --values): the service account and its Workload Identity annotation, the egress proxy's port, the region, the allowlisted destinations the NetworkPolicy lets the gateway reach, and the gateway pool's node selector and toleration."
  value = {
    serviceAccount = {
      name        = var.service_account
      annotations = { "iam.gke.io/gcp-service-account" = module.identity.gateway_service_account }
    }
    egressProxy   = { port = var.egress_proxy_port, regions = [var.region] }
    license       = { region = var.region }
    networkPolicy = { egressTo = [for c in var.egress_cidrs : { ipBlock = { cidr = c } }] }
    nodeSelector  = local.gateway_node_label
    tolerations   = [{ key = "meshguard.io/role", operator = "Equal", value = "gateway", effect = "NoSchedule" }]
  }
}
