# Workload identity for the gateway: OKE workload identity lets the pods of one service account
# in one cluster act as a principal (no API key or instance principal is shared), and this
# policy gives that principal exactly the key, the archive bucket and the log; the
# administrators' group manages the cluster family. The services that encrypt with the key get
# it from the kms module's policy, before anything uses the key; this one needs the cluster, so
# it comes after it. IAM policies are written in the tenancy's home region (oci.home).
locals {
  workload = "request.principal.type = 'workload', request.principal.namespace = '${var.namespace}', request.principal.service_account = '${var.service_account}', request.principal.cluster_id = '${var.cluster_id}'"
  statements = concat(
    [
      "Allow any-user to use keys in compartment id ${var.compartment_id} where all {${local.workload}, target.key.id = '${var.kms_key_id}'}",
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
  provider       = oci.home
  compartment_id = var.compartment_id
  name           = "${var.name}-gateway"
  description    = "MeshGuard ${var.name}: the gateway's workload identity, the administrators"
  statements     = local.statements
  freeform_tags  = var.tags
}
