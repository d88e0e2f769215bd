# The gateway's audit and alert stream, as written to Cloud Logging by its pods, is routed by a
# log sink to a Pub/Sub topic (encrypted with the customer-managed key) that the customer's SIEM
# subscribes to; the subscription keeps messages retention_days while the SIEM is away.
data "google_project" "this" {
  project_id = var.project_id
}

# Pub/Sub encrypts the topic's messages with the key as the project's Pub/Sub service agent,
# which must hold the key before the topic is created (creation fails otherwise).
resource "google_kms_crypto_key_iam_member" "pubsub" {
  crypto_key_id = var.kms_key_id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "this" {
  project      = var.project_id
  name         = var.name
  kms_key_name = var.kms_key_id
  labels       = var.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub]
}

resource "google_logging_project_sink" "this" {
  project                = var.project_id
  name                   = var.name
  destination            = "pubsub.googleapis.com/${google_pubsub_topic.this.id}"
  filter                 = var.filter
  unique_writer_identity = true
}

resource "google_pubsub_topic_iam_member" "sink" {
  project = var.project_id
  topic   = google_pubsub_topic.this.name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.this.writer_identity
}

resource "google_pubsub_subscription" "siem" {
  project                    = var.project_id
  name                       = "${var.name}-siem"
  topic                      = google_pubsub_topic.this.id
  message_retention_duration = "${var.retention_days * 86400}s"
  ack_deadline_seconds       = 60
  labels                     = var.labels
}

resource "google_pubsub_subscription_iam_member" "siem" {
  for_each     = toset(var.siem_members)
  project      = var.project_id
  subscription = google_pubsub_subscription.siem.name
  role         = "roles/pubsub.subscriber"
  member       = each.value
}
