# One dedicated tenant or customer-operated install on Oracle Cloud Infrastructure: private
# network with the egress path through the egress proxy, the customer-managed key in a private
# vault, the WORM audit archive, log shipping to the SIEM through Streaming, workload identity,
# and an enhanced OKE cluster with a private API endpoint, a system node pool and a tainted
# gateway node pool.
#
# Region pinning: OCI resources take no region argument; the region is the provider's. The
# caller configures the oci provider with region = the same value passed here as `region`, and
# this module refuses a mismatch at plan time: the Oracle Services Network the provider's
# region offers is named after its region key ("All FRA Services In Oracle Services Network"),
# which the tenancy's region list maps to the region's name. (Availability domain names do not
# tell: us-ashburn-1's are "…:US-ASHBURN-AD-1", us-phoenix-1's "…:PHX-AD-1".)
# IAM policies are written through a second provider, oci.home, configured for the tenancy's
# home region (IAM accepts writes there only); it may be the same region.
data "oci_identity_availability_domains" "this" {
  compartment_id = var.compartment_id
}

data "oci_identity_regions" "all" {}

data "oci_core_services" "this" {
  filter {
    name   = "name"
    values = ["All .* Services In Oracle Services Network"]
    regex  = true
  }
}

locals {
  tags = merge(var.tags, { "meshguard-install" = var.name })
  # "All FRA Services In Oracle Services Network" -> "FRA" -> "eu-frankfurt-1".
  provider_region_key = regex("^All ([A-Z0-9]+) Services", data.oci_core_services.this.services[0].name)[0]
  provider_region     = one([for r in data.oci_identity_regions.all.regions : r.name if upper(r.key) == local.provider_region_key])
  region_check        = local.provider_region == var.region ? var.region : file("ERROR: the oci provider talks to ${coalesce(local.provider_region, local.provider_region_key)}, not the pinned region ${var.region}: configure provider \"oci\" { region = \"${var.region}\" }")
}

module "kms" {
  source               = "../kms/oci"
  name                 = var.name
  compartment_id       = var.compartment_id
  region               = local.region_check
  rotation_period_days = var.kms_rotation_period_days
  tags                 = local.tags
  providers            = { oci = oci, oci.home = oci.home }
}

module "networking" {
  source            = "../networking/oci"
  name              = var.name
  compartment_id    = var.compartment_id
  cidr_block        = var.vcn_cidr_block
  egress_cidrs      = var.egress_cidrs
  egress_proxy_port = var.egress_proxy_port
  tags              = local.tags
}

module "archive" {
  source         = "../archive/oci"
  bucket_name    = var.archive_bucket_name
  compartment_id = var.compartment_id
  kms_key_id     = module.kms.key_id
  retention_days = var.archive_retention_days
  lock_retention = var.archive_lock_retention
  lock_after     = var.archive_lock_after
  tags           = local.tags
}

module "siem" {
  source         = "../siem/oci"
  name           = var.name
  compartment_id = var.compartment_id
  kms_key_id     = module.kms.key_id
  tags           = local.tags
  providers      = { oci = oci, oci.home = oci.home }
}

module "identity" {
  source          = "../identity/oci"
  name            = var.name
  compartment_id  = var.compartment_id
  region          = local.region_check
  cluster_id      = oci_containerengine_cluster.this.id
  namespace       = var.namespace
  service_account = var.service_account
  kms_key_id      = module.kms.key_id
  archive_bucket  = module.archive.bucket
  log_id          = module.siem.log_id
  admin_groups    = var.admin_groups
  tags            = local.tags
  providers       = { oci = oci, oci.home = oci.home }
}

# An enhanced cluster (workload identity needs it) whose API endpoint has a private address
# only, Kubernetes secrets encrypted with the customer-managed key (module.kms.key_id is known
# only once OKE may use it), VCN-native pod networking, and only signed images.
resource "oci_containerengine_cluster" "this" {
  compartment_id     = var.compartment_id
  name               = var.name
  vcn_id             = module.networking.vcn_id
  kubernetes_version = var.kubernetes_version
  type               = "ENHANCED_CLUSTER"
  kms_key_id         = module.kms.key_id
  freeform_tags      = local.tags

  endpoint_config {
    subnet_id            = module.networking.private_subnet_id
    is_public_ip_enabled = false
    nsg_ids              = [module.networking.workloads_nsg_id]
  }

  cluster_pod_network_options {
    cni_type = "OCI_VCN_IP_NATIVE"
  }

  image_policy_config {
    is_policy_enabled = var.image_signing_key_id != null

    dynamic "key_details" {
      for_each = var.image_signing_key_id == null ? [] : [var.image_signing_key_id]
      content {
        kms_key_id = key_details.value
      }
    }
  }
}

locals {
  # The chart's values this install needs, from one place: the gateway's pods land on the
  # gateway pool, whose taint they tolerate.
  gateway_node_label = { "meshguard.io/role" = "gateway" }
  gateway_taint      = "meshguard.io/role=gateway:NoSchedule"
  # OKE's own start-up script (what a node runs when no user_data is given), with the taint
  # passed to the kubelet, so that nothing but the gateway lands on the nodes whose groups
  # open the allowlist.
  gateway_init = <<-EOT
    #!/bin/bash
    curl --fail -H "Authorization: Bearer Oracle" -L0 http://169.254.169.254/opc/v2/instance/metadata/oke_init_script | base64 --decode >/var/run/oke-init.sh
    bash /var/run/oke-init.sh --kubelet-extra-args "--register-with-taints=${local.gateway_taint}"
  EOT
  pools = {
    system = {
      size     = var.system_node_count
      nsg_ids  = [module.networking.workloads_nsg_id]
      metadata = {}
      labels   = { "meshguard.io/role" = "system" }
    }
    gateway = {
      size     = var.node_count
      nsg_ids  = [module.networking.workloads_nsg_id, module.networking.egress_proxy_nsg_id]
      metadata = { user_data = base64encode(local.gateway_init) }
      labels   = local.gateway_node_label
    }
  }
}

# Two pools: system (the add-ons, the agents, the archive job) and gateway (the gateway and its
# egress proxy only: tainted, and alone behind the egress proxy's group, nodes and pods).
resource "oci_containerengine_node_pool" "this" {
  for_each           = local.pools
  compartment_id     = var.compartment_id
  cluster_id         = oci_containerengine_cluster.this.id
  name               = each.key
  kubernetes_version = var.kubernetes_version
  node_shape         = var.node_shape
  node_metadata      = each.value.metadata
  freeform_tags      = local.tags

  node_shape_config {
    ocpus         = var.node_ocpus
    memory_in_gbs = var.node_memory_gbs
  }

  node_source_details {
    source_type = "IMAGE"
    image_id    = var.node_image_id
  }

  node_config_details {
    size                                = each.value.size
    kms_key_id                          = module.kms.key_id
    is_pv_encryption_in_transit_enabled = true
    nsg_ids                             = each.value.nsg_ids

    # VCN-native pod networking: every pod an address in the pod subnet, behind its pool's
    # groups.
    node_pool_pod_network_option_details {
      cni_type       = "OCI_VCN_IP_NATIVE"
      pod_subnet_ids = [module.networking.pods_subnet_id]
      pod_nsg_ids    = each.value.nsg_ids
    }

    dynamic "placement_configs" {
      for_each = data.oci_identity_availability_domains.this.availability_domains
      content {
        availability_domain = placement_configs.value.name
        subnet_id           = module.networking.private_subnet_id
      }
    }
  }

  dynamic "initial_node_labels" {
    for_each = each.value.labels
    content {
      key   = initial_node_labels.key
      value = initial_node_labels.value
    }
  }
}
