output "bucket" {
  description = "The archive bucket's name."
  value       = google_storage_bucket.this.name
}

output "bucket_url" {
  description = "The archive bucket's gs:// URL."
  value       = google_storage_bucket.this.url
}
