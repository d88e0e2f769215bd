# Private networking: one subnet with Private Google Access (Google APIs without the internet),
# secondary ranges for the cluster's pods and services, all egress denied but the paths the
# cluster needs (below) and the egress proxy's to the allowlisted destinations, through Cloud
# NAT (only when egress_cidrs is not empty).
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

# The paths the cluster needs through the deny: the private control plane (GKE reaches it on
# TCP 443 only), Google APIs on private.googleapis.com (Artifact Registry and gcr.io images,
# STS and IAM credentials for Workload Identity, Cloud KMS, Logging), named by the private
# zones below; and everything inside the network. DNS itself goes to the metadata server
# (169.254.169.254), which VPC firewall rules do not filter.
resource "google_compute_firewall" "control_plane" {
  project            = var.project_id
  name               = "${var.name}-control-plane"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [var.master_cidr_block]

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }
}

resource "google_compute_firewall" "google_apis" {
  project            = var.project_id
  name               = "${var.name}-google-apis"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = [local.private_googleapis]

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

# Agents reach the egress proxy (the gateway's pods, on the tagged nodes) on its port.
resource "google_compute_firewall" "to_egress_proxy" {
  project       = var.project_id
  name          = "${var.name}-to-egress-proxy"
  network       = google_compute_network.this.id
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = [var.cidr_block, var.pods_cidr_block]
  target_tags   = [var.egress_proxy_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.egress_proxy_port)]
  }
}

locals {
  # private.googleapis.com: 199.36.153.8/30, reached through the default internet gateway's
  # route with Private Google Access, never the internet.
  private_googleapis = "199.36.153.8/30"
  private_zones = {
    googleapis = "googleapis.com."
    gcr        = "gcr.io."
    pkg-dev    = "pkg.dev."
  }
}

# Private DNS: googleapis.com, gcr.io and pkg.dev answer with private.googleapis.com's
# addresses inside the network, so the API, registry and identity calls stay on the path above.
resource "google_dns_managed_zone" "private" {
  for_each    = local.private_zones
  project     = var.project_id
  name        = "${var.name}-${each.key}"
  dns_name    = each.value
  description = "${each.value} through private.googleapis.com (Private Google Access)"
  visibility  = "private"

  private_visibility_config {
    networks {
      network_url = google_compute_network.this.id
    }
  }
}

resource "google_dns_record_set" "private_a" {
  for_each     = local.private_zones
  project      = var.project_id
  managed_zone = google_dns_managed_zone.private[each.key].name
  name         = each.key == "googleapis" ? "private.googleapis.com." : each.value
  type         = "A"
  ttl          = 300
  rrdatas      = ["199.36.153.8", "199.36.153.9", "199.36.153.10", "199.36.153.11"]
}

resource "google_dns_record_set" "private_cname" {
  for_each     = local.private_zones
  project      = var.project_id
  managed_zone = google_dns_managed_zone.private[each.key].name
  name         = "*.${each.value}"
  type         = "CNAME"
  ttl          = 300
  rrdatas      = [each.key == "googleapis" ? "private.googleapis.com." : each.value]
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
