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
