# The WORM audit archive: an Object Storage bucket with a retention rule keeping every object
# retention_days, locked (by default 15 days after creation, the earliest Object Storage allows
# is 14: the rule can then never be shortened or removed), encrypted with the customer-managed
# key, no public access. Retention rules need versioning off.
data "oci_objectstorage_namespace" "this" {
  compartment_id = var.compartment_id
}

# Fixed once, at creation: the lock time does not move on later plans.
resource "time_offset" "lock" {
  count       = var.lock_retention && var.lock_after == null ? 1 : 0
  offset_days = 15
}

locals {
  lock_time = var.lock_retention ? (var.lock_after == null ? time_offset.lock[0].rfc3339 : var.lock_after) : null
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
    time_rule_locked = local.lock_time

    duration {
      time_amount = var.retention_days
      time_unit   = "DAYS"
    }
  }
}
