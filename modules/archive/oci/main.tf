# The WORM audit archive: an Object Storage bucket with a retention rule keeping every object
# retention_days (locked from lock_after on: the rule can then never be shortened or removed),
# encrypted with the customer-managed key, no public access. Retention rules need versioning off.
data "oci_objectstorage_namespace" "this" {
  compartment_id = var.compartment_id
}

resource "oci_objectstorage_bucket" "this" {
  compartment_id = var.compartment_id
  namespace      = data.oci_objectstorage_namespace.this.namespace
  name           = var.bucket_name
  access_type    = "NoPublicAccess"
  storage_tier   = "Standard"
  kms_key_id     = var.kms_key_id
  versioning     = "Disabled"
  freeform_tags  = var.tags

  retention_rules {
    display_name     = "meshguard-audit-worm"
    time_rule_locked = var.lock_after

    duration {
      time_amount = var.retention_days
      time_unit   = "DAYS"
    }
  }
}
