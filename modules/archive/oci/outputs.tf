output "bucket" {
  description = "The archive bucket's name."
  value       = oci_objectstorage_bucket.this.name
}

output "namespace" {
  description = "The tenancy's Object Storage namespace."
  value       = data.oci_objectstorage_namespace.this.namespace
}
