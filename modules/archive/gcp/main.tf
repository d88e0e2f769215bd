# The WORM audit archive: a bucket whose retention policy keeps every object retention_days
# (locked: the policy can then never be shortened or removed), encrypted with the
# customer-managed key, uniform access only, never public.
data "google_storage_project_service_account" "this" {
  project = var.project_id
}

# Cloud Storage encrypts with the key as its own service agent.
resource "google_kms_crypto_key_iam_member" "storage" {
  crypto_key_id = var.kms_key_id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

resource "google_storage_bucket" "this" {
  project                     = var.project_id
  name                        = var.bucket_name
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  retention_policy {
    retention_period = var.retention_days * 86400
    is_locked        = var.lock_retention
  }

  encryption {
    default_kms_key_name = var.kms_key_id
  }

  depends_on = [google_kms_crypto_key_iam_member.storage]
}

# count, not for_each: a writer is often a service account made in the same apply, whose email
# is unknown at plan time, and for_each keys must be known then.
resource "google_storage_bucket_iam_member" "writers" {
  count  = length(var.writer_members)
  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectCreator"
  member = var.writer_members[count.index]
}

resource "google_storage_bucket_iam_member" "readers" {
  count  = length(var.writer_members)
  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectViewer"
  member = var.writer_members[count.index]
}
