output "network_id" {
  description = "The VPC network's id."
  value       = google_compute_network.this.id
}

output "subnetwork_id" {
  description = "The subnet's id: known once the firewall's paths and the private zones exist, so a cluster in it comes after them."
  value       = google_compute_subnetwork.this.id
  depends_on = [
    google_compute_firewall.control_plane,
    google_compute_firewall.google_apis,
    google_compute_firewall.inside,
    google_dns_record_set.private_a,
    google_dns_record_set.private_cname,
  ]
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
