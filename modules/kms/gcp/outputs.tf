output "key_id" {
  description = "The key's id (projects/…/locations/…/keyRings/…/cryptoKeys/…), what CMEK settings take."
  value       = google_kms_crypto_key.this.id
}

output "key_ring_id" {
  description = "The key ring's id."
  value       = google_kms_key_ring.this.id
}
