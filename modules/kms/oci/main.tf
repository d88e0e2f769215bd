# The customer-managed key: an OCI Vault (a private vault, isolated HSM partition, when
# private_vault is on) holding an AES-256 key protected by the HSM and rotated automatically,
# and the policy that lets the services which encrypt with it do so: Object Storage (the
# archive), Streaming (the SIEM stream), Block Volume and OKE's node pools (the nodes' boot
# volumes), and OKE's clusters (Kubernetes secrets). key_id is output only once that policy
# exists, so whatever takes it is created after its grant. IAM policies are written in the
# tenancy's home region (the oci.home provider); the key lives in the provider's region (see the
# oci module for region pinning).
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

locals {
  where_key = "target.key.id = '${oci_kms_key.this.id}'"
  in        = "in compartment id ${var.compartment_id}"
}

resource "oci_identity_policy" "key_services" {
  provider       = oci.home
  compartment_id = var.compartment_id
  name           = "${var.name}-key-services"
  description    = "MeshGuard ${var.name}: the services that encrypt with the customer-managed key"
  freeform_tags  = var.tags
  statements = [
    "Allow service objectstorage-${var.region} to use keys ${local.in} where ${local.where_key}",
    "Allow service streaming to use keys ${local.in} where ${local.where_key}",
    "Allow service blockstorage to use keys ${local.in} where ${local.where_key}",
    "Allow service oke to use keys ${local.in} where ${local.where_key}",
    "Allow any-user to use keys ${local.in} where all {request.principal.type = 'cluster', ${local.where_key}}",
    "Allow any-user to use key-delegates ${local.in} where all {request.principal.type = 'nodepool', ${local.where_key}}",
  ]
}
