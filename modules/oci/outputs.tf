output "cluster_id" {
  description = "The OKE cluster: oci ce cluster create-kubeconfig --cluster-id ID --kube-endpoint PRIVATE_ENDPOINT."
  value       = oci_containerengine_cluster.this.id
}

output "vcn_id" {
  description = "The VCN's OCID."
  value       = module.networking.vcn_id
}

output "key_id" {
  description = "The customer-managed key."
  value       = module.kms.key_id
}

output "archive_bucket" {
  description = "The WORM audit archive bucket."
  value       = module.archive.bucket
}

output "siem_stream_id" {
  description = "The stream the customer's SIEM consumes."
  value       = module.siem.stream_id
}

output "namespace" {
  description = "The namespace to install the chart in (helm --namespace): the one the workload identity policy names."
  value       = var.namespace
}

output "helm_values" {
  description = "The chart's values this install fixes (helm --values): the service account the workload identity policy names (OKE workload identity needs no annotation), the egress proxy's port, the region, the allowlisted destinations the NetworkPolicy lets the gateway reach, and the gateway pool's node selector and toleration."
  value = {
    serviceAccount = { name = var.service_account }
    egressProxy    = { port = var.egress_proxy_port, regions = [var.region] }
    license        = { region = var.region }
    networkPolicy  = { egressTo = [for c in var.egress_cidrs : { ipBlock = { cidr = c } }] }
    nodeSelector   = local.gateway_node_label
    tolerations    = [{ key = "meshguard.io/role", operator = "Equal", value = "gateway", effect = "NoSchedule" }]
  }
}
