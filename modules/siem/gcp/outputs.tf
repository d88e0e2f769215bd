output "topic_id" {
  description = "The Pub/Sub topic the sink routes to."
  value       = google_pubsub_topic.this.id
}

output "subscription_id" {
  description = "The subscription the customer's SIEM pulls from."
  value       = google_pubsub_subscription.siem.id
}
