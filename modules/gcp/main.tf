# One dedicated tenant or customer-operated install on Google Cloud: private network with the
# egress path through the egress proxy, the customer-managed key, the WORM audit archive, log
# routing to the SIEM, workload identity, and a private regional GKE cluster for the chart.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, { "meshguard-install" = var.name })
  # The chart's values this install needs, from one place: the gateway's pods land on the
  # gateway pool, whose taint they tolerate.
  gateway_node_label = { "meshguard.io/role" = "gateway" }
}

module "kms" {
  source               = "../kms/gcp"
  name                 = var.name
  project_id           = var.project_id
  region               = var.region
  rotation_period_days = var.kms_rotation_period_days
  user_members         = [module.identity.gateway_member]
  labels               = local.labels
}

# GKE encrypts Kubernetes secrets with the key as the project's GKE service agent, which must
# hold the key before the cluster is created.
resource "google_kms_crypto_key_iam_member" "gke_agent" {
  crypto_key_id = module.kms.key_id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
}

module "networking" {
  source            = "../networking/gcp"
  name              = var.name
  project_id        = var.project_id
  region            = var.region
  cidr_block        = var.subnet_cidr_block
  master_cidr_block = var.master_cidr_block
  egress_cidrs      = var.egress_cidrs
  egress_proxy_port = var.egress_proxy_port
}

module "archive" {
  source         = "../archive/gcp"
  bucket_name    = var.archive_bucket_name
  project_id     = var.project_id
  region         = var.region
  kms_key_id     = module.kms.key_id
  retention_days = var.archive_retention_days
  lock_retention = var.archive_lock_retention
  writer_members = [module.identity.gateway_member]
  labels         = local.labels
}

module "siem" {
  source       = "../siem/gcp"
  name         = "${var.name}-siem"
  project_id   = var.project_id
  region       = var.region
  kms_key_id   = module.kms.key_id
  siem_members = var.siem_members
  labels       = local.labels
}

module "identity" {
  source          = "../identity/gcp"
  name            = var.name
  project_id      = var.project_id
  workload_pool   = google_container_cluster.this.workload_identity_config[0].workload_pool
  namespace       = var.namespace
  service_account = var.service_account
  admin_members   = var.admin_members
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "MeshGuard GKE nodes (${var.name})"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/artifactregistry.reader"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.nodes.email}"
}

# A regional cluster whose nodes and control plane have private addresses only, Kubernetes
# secrets encrypted with the customer-managed key, GKE Workload Identity, and GKE Dataplane V2,
# which enforces the chart's NetworkPolicy.
resource "google_container_cluster" "this" {
  project                  = var.project_id
  name                     = var.name
  location                 = var.region
  network                  = module.networking.network_id
  subnetwork               = module.networking.subnetwork_id
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true
  datapath_provider        = "ADVANCED_DATAPATH"
  resource_labels          = local.labels

  release_channel {
    channel = "REGULAR"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = true
    master_ipv4_cidr_block  = var.master_cidr_block
  }

  master_authorized_networks_config {
    cidr_blocks {
      cidr_block   = var.subnet_cidr_block
      display_name = "the cluster's own subnet"
    }
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = module.networking.pods_range_name
    services_secondary_range_name = module.networking.services_range_name
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = module.kms.key_id
  }

  depends_on = [google_kms_crypto_key_iam_member.gke_agent]
}

# The cluster's add-ons and the agents: no egress proxy tag.
resource "google_container_node_pool" "system" {
  project  = var.project_id
  name     = "system"
  location = var.region
  cluster  = google_container_cluster.this.name

  autoscaling {
    min_node_count = 1
    max_node_count = var.system_node_count_max
  }

  node_config {
    machine_type    = var.system_machine_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = { "meshguard.io/role" = "system" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

# The gateway and its egress proxy only: tainted, so nothing else lands on the nodes whose
# network tag opens the allowlist.
resource "google_container_node_pool" "gateway" {
  project  = var.project_id
  name     = "gateway"
  location = var.region
  cluster  = google_container_cluster.this.name

  autoscaling {
    min_node_count = var.node_count_min
    max_node_count = var.node_count_max
  }

  node_config {
    machine_type    = var.node_machine_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    tags            = [module.networking.egress_proxy_tag]
    labels          = local.gateway_node_label

    taint {
      key    = "meshguard.io/role"
      value  = "gateway"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}
