# The customer-managed key: an OCI Vault (a private vault, isolated HSM partition, when
# private_vault is on) holding an AES-256 key protected by the HSM and rotated automatically.
# The region is the provider's: OCI resources take no region argument (see the oci module).
resource "oci_kms_vault" "this" {
  compartment_id = var.compartment_id
  display_name   = var.name
  vault_type     = var.private_vault ? "VIRTUAL_PRIVATE" : "DEFAULT"
  freeform_tags  = var.tags
}

resource "oci_kms_key" "this" {
  compartment_id           = var.compartment_id
  display_name             = var.name
  management_endpoint      = oci_kms_vault.this.management_endpoint
  protection_mode          = "HSM"
  is_auto_rotation_enabled = true
  freeform_tags            = var.tags

  key_shape {
    algorithm = "AES"
    length    = 32
  }

  auto_key_rotation_details {
    rotation_interval_in_days = var.rotation_period_days
  }
}
