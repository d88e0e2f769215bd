output "policy_id" {
  description = "The policy's OCID."
  value       = oci_identity_policy.this.id
}
