output "vault_id" {
  description = "The vault's OCID."
  value       = oci_kms_vault.this.id
}

output "key_id" {
  description = "The key's OCID, what CMEK settings take: known only once the services may use it."
  value       = oci_kms_key.this.id
  depends_on  = [oci_identity_policy.key_services]
}

output "key_services_policy_id" {
  description = "The policy that lets Object Storage, Streaming, Block Volume and OKE use the key."
  value       = oci_identity_policy.key_services.id
}
