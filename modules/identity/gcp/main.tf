# Workload identity for the gateway: a Google service account that the gateway's Kubernetes
# service account impersonates through GKE Workload Identity (no key file exists), allowed to
# write logs; and the roles of the site's administrators (a group from the customer's identity
# provider, synchronised to Cloud Identity).
resource "google_service_account" "gateway" {
  project      = var.project_id
  account_id   = "${var.name}-gateway"
  display_name = "MeshGuard gateway (${var.name})"
}

# The project's workload identity pool exists once its first cluster with Workload Identity
# does: the binding takes the pool from the cluster (workload_pool), so it is created after it
# (on a new project, before it, IAM answers "Identity Pool does not exist").
resource "google_service_account_iam_member" "workload_identity" {
  service_account_id = google_service_account.gateway.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.workload_pool}[${var.namespace}/${var.service_account}]"
}

resource "google_project_iam_member" "gateway_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.gateway.email}"
}

locals {
  admin_bindings = { for pair in setproduct(var.admin_members, var.admin_roles) : "${pair[0]} ${pair[1]}" => pair }
}

resource "google_project_iam_member" "admins" {
  for_each = local.admin_bindings
  project  = var.project_id
  member   = each.value[0]
  role     = each.value[1]
}
