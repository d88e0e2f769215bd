output "log_id" {
  description = "The custom log the gateway's stream is written to."
  value       = oci_logging_log.gateway.id
}

output "stream_id" {
  description = "The stream the customer's SIEM consumes."
  value       = oci_streaming_stream.siem.id
}
