# The gateway's audit and alert stream: a custom log in a log group, moved as it arrives by a
# Service Connector Hub into a stream (encrypted with the customer-managed key) that the
# customer's SIEM consumes with the Kafka-compatible Streaming API.
resource "oci_logging_log_group" "this" {
  compartment_id = var.compartment_id
  display_name   = var.name
  freeform_tags  = var.tags
}

resource "oci_logging_log" "gateway" {
  display_name       = "${var.name}-gateway"
  log_group_id       = oci_logging_log_group.this.id
  log_type           = "CUSTOM"
  is_enabled         = true
  retention_duration = var.retention_days
  freeform_tags      = var.tags
}

resource "oci_streaming_stream_pool" "this" {
  compartment_id = var.compartment_id
  name           = var.name
  freeform_tags  = var.tags

  custom_encryption_key {
    kms_key_id = var.kms_key_id
  }
}

resource "oci_streaming_stream" "siem" {
  name               = "${var.name}-siem"
  stream_pool_id     = oci_streaming_stream_pool.this.id
  partitions         = 1
  retention_in_hours = var.stream_retention_hours
  freeform_tags      = var.tags
}

# The Service Connector writes to the stream as its own principal, which needs this policy
# (written in the home region, oci.home) before it starts.
resource "oci_identity_policy" "connector" {
  provider       = oci.home
  compartment_id = var.compartment_id
  name           = "${var.name}-siem-connector"
  description    = "MeshGuard ${var.name}: the Service Connector pushes the gateway's log to the SIEM stream"
  freeform_tags  = var.tags
  statements = [
    "Allow any-user to use stream-push in compartment id ${var.compartment_id} where all {request.principal.type = 'serviceconnector', request.principal.compartment.id = '${var.compartment_id}', target.stream.id = '${oci_streaming_stream.siem.id}'}",
  ]
}

resource "oci_sch_service_connector" "this" {
  compartment_id = var.compartment_id
  display_name   = "${var.name}-to-siem"
  freeform_tags  = var.tags

  source {
    kind = "logging"

    log_sources {
      compartment_id = var.compartment_id
      log_group_id   = oci_logging_log_group.this.id
      log_id         = oci_logging_log.gateway.id
    }
  }

  target {
    kind      = "streaming"
    stream_id = oci_streaming_stream.siem.id
  }

  depends_on = [oci_identity_policy.connector]
}
