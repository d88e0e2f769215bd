# Workload identity for the gateway: OKE workload identity lets the pods of one service account
# in one cluster act as a principal (no API key or instance principal is shared), and this
# policy gives that principal exactly the key, the archive bucket and the log. Object Storage
# and Streaming in the pinned region may use the key; the administrators' group manages the
# cluster family.
locals {
  workload = "request.principal.type = 'workload', request.principal.namespace = '${var.namespace}', request.principal.service_account = '${var.service_account}', request.principal.cluster_id = '${var.cluster_id}'"
  statements = concat(
    [
      "Allow any-user to use keys in compartment id ${var.compartment_id} where all {${local.workload}, target.key.id = '${var.kms_key_id}'}",
      "Allow service objectstorage-${var.region} to use keys in compartment id ${var.compartment_id} where target.key.id = '${var.kms_key_id}'",
      "Allow service streaming to use keys in compartment id ${var.compartment_id} where target.key.id = '${var.kms_key_id}'",
    ],
    var.archive_bucket == null ? [] : [
      "Allow any-user to manage objects in compartment id ${var.compartment_id} where all {${local.workload}, target.bucket.name = '${var.archive_bucket}', any {request.permission = 'OBJECT_CREATE', request.permission = 'OBJECT_INSPECT', request.permission = 'OBJECT_READ'}}",
    ],
    var.log_id == null ? [] : [
      "Allow any-user to use log-content in compartment id ${var.compartment_id} where all {${local.workload}}",
    ],
    [for g in var.admin_groups : "Allow group ${g} to manage cluster-family in compartment id ${var.compartment_id}"],
  )
}

resource "oci_identity_policy" "this" {
  compartment_id = var.compartment_id
  name           = "${var.name}-gateway"
  description    = "MeshGuard ${var.name}: the gateway's workload identity, the key's services, the administrators"
  statements     = local.statements
  freeform_tags  = var.tags
}
