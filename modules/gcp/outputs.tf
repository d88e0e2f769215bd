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
