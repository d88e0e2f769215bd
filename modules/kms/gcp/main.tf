# The customer-managed key: a Cloud KMS key ring in the pinned region and a symmetric key
# rotated every rotation_period_days; Cloud KMS keeps earlier versions, so data encrypted before
# a rotation still decrypts.
resource "google_kms_key_ring" "this" {
  project  = var.project_id
  name     = var.name
  location = var.region
}

resource "google_kms_crypto_key" "this" {
  name            = var.name
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "${var.rotation_period_days * 86400}s"
  labels          = var.labels

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = var.protection_level
  }

  lifecycle {
    prevent_destroy = true
  }
}

# count, not for_each: a member is often a service account made in the same apply, whose email
# is unknown at plan time, and for_each keys must be known then.
resource "google_kms_crypto_key_iam_member" "users" {
  count         = length(var.user_members)
  crypto_key_id = google_kms_crypto_key.this.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = var.user_members[count.index]
}
