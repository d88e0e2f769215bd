# Private networking: one subnet with Private Google Access (Google APIs without the internet),
# secondary ranges for the cluster's pods and services, all egress denied but from the egress
# proxy to the allowlisted destinations, through Cloud NAT (only when egress_cidrs is not empty).
resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"
}

resource "google_compute_subnetwork" "this" {
  project                  = var.project_id
  name                     = var.name
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = var.cidr_block
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr_block
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr_block
  }

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "deny_egress" {
  project            = var.project_id
  name               = "${var.name}-deny-egress"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 65000
  destination_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }
}

resource "google_compute_firewall" "google_apis" {
  project            = var.project_id
  name               = "${var.name}-google-apis"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = ["199.36.153.8/30"] # private.googleapis.com

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

resource "google_compute_firewall" "inside" {
  project            = var.project_id
  name               = "${var.name}-inside"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [var.cidr_block, var.pods_cidr_block, var.services_cidr_block]

  allow {
    protocol = "all"
  }
}

resource "google_compute_firewall" "egress_proxy" {
  count              = length(var.egress_cidrs) > 0 ? 1 : 0
  project            = var.project_id
  name               = "${var.name}-egress-proxy"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 900
  target_tags        = [var.egress_proxy_tag]
  destination_ranges = var.egress_cidrs

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

resource "google_compute_router" "this" {
  count   = length(var.egress_cidrs) > 0 ? 1 : 0
  project = var.project_id
  name    = var.name
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "this" {
  count                              = length(var.egress_cidrs) > 0 ? 1 : 0
  project                            = var.project_id
  name                               = var.name
  router                             = google_compute_router.this[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.this.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ALL"
  }
}
