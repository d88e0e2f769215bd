output "network_id" {
  description = "The VPC network's id."
  value       = google_compute_network.this.id
}

output "subnetwork_id" {
  description = "The subnet's id."
  value       = google_compute_subnetwork.this.id
}

output "pods_range_name" {
  description = "The secondary range name for pods."
  value       = "pods"
}

output "services_range_name" {
  description = "The secondary range name for services."
  value       = "services"
}

output "egress_proxy_tag" {
  description = "The network tag that opens the allowlist: put it on the gateway's (tainted) node pool only."
  value       = var.egress_proxy_tag
}
