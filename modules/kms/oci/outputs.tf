output "vault_id" {
  description = "The vault's OCID."
  value       = oci_kms_vault.this.id
}

output "key_id" {
  description = "The key's OCID, what CMEK settings take."
  value       = oci_kms_key.this.id
}
