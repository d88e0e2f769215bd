output "gateway_service_account" {
  description = "The gateway's Google service account: the chart's serviceAccount annotation iam.gke.io/gcp-service-account."
  value       = google_service_account.gateway.email
}

output "gateway_member" {
  description = "The gateway as an IAM member (serviceAccount:…), for the key and the archive."
  value       = "serviceAccount:${google_service_account.gateway.email}"
}
