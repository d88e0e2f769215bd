# One dedicated tenant or customer-operated install on Oracle Cloud Infrastructure: private
# network with the egress path through the egress proxy, the customer-managed key in a private
# vault, the WORM audit archive, log shipping to the SIEM through Streaming, workload identity,
# and an enhanced OKE cluster with a private API endpoint and a node pool for the chart.
#
# Region pinning: OCI resources take no region argument; the region is the provider's. The
# caller configures the oci provider with region = the same value passed here as `region`, and
# this module refuses a mismatch at plan time (the home of the compartment's availability
# domains names the region the provider talks to).
data "oci_identity_availability_domains" "this" {
  compartment_id = var.compartment_id
}

locals {
  tags = merge(var.tags, { "meshguard-install" = var.name })
  # An availability domain's name is "<tenancy prefix>:<REGION KEY>-AD-<n>", e.g. "Uocm:EU-FRANKFURT-1-AD-1".
  provider_region = lower(replace(split(":", data.oci_identity_availability_domains.this.availability_domains[0].name)[1], "/-AD-[0-9]+$/", ""))
  region_check    = local.provider_region == var.region ? var.region : file("ERROR: the oci provider talks to ${local.provider_region}, not the pinned region ${var.region}: configure provider \"oci\" { region = \"${var.region}\" }")
}

module "kms" {
  source               = "../kms/oci"
  name                 = var.name
  compartment_id       = var.compartment_id
  rotation_period_days = var.kms_rotation_period_days
  tags                 = local.tags
}

module "networking" {
  source         = "../networking/oci"
  name           = var.name
  compartment_id = var.compartment_id
  cidr_block     = var.vcn_cidr_block
  egress_cidrs   = var.egress_cidrs
  tags           = local.tags
}

module "archive" {
  source         = "../archive/oci"
  bucket_name    = var.archive_bucket_name
  compartment_id = var.compartment_id
  kms_key_id     = module.kms.key_id
  retention_days = var.archive_retention_days
  lock_after     = var.archive_lock_after
  tags           = local.tags
}

module "siem" {
  source         = "../siem/oci"
  name           = var.name
  compartment_id = var.compartment_id
  kms_key_id     = module.kms.key_id
  tags           = local.tags
}

module "identity" {
  source         = "../identity/oci"
  name           = var.name
  compartment_id = var.compartment_id
  region         = local.region_check
  cluster_id     = oci_containerengine_cluster.this.id
  namespace      = var.namespace
  kms_key_id     = module.kms.key_id
  archive_bucket = module.archive.bucket
  log_id         = module.siem.log_id
  admin_groups   = var.admin_groups
  tags           = local.tags
}

# An enhanced cluster (workload identity needs it) whose API endpoint has a private address
# only, Kubernetes secrets encrypted with the customer-managed key, and only signed images.
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

resource "oci_containerengine_node_pool" "gateway" {
  compartment_id     = var.compartment_id
  cluster_id         = oci_containerengine_cluster.this.id
  name               = "gateway"
  kubernetes_version = var.kubernetes_version
  node_shape         = var.node_shape
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
    size                                = var.node_count
    kms_key_id                          = module.kms.key_id
    is_pv_encryption_in_transit_enabled = true
    nsg_ids                             = [module.networking.workloads_nsg_id, module.networking.egress_proxy_nsg_id]

    dynamic "placement_configs" {
      for_each = data.oci_identity_availability_domains.this.availability_domains
      content {
        availability_domain = placement_configs.value.name
        subnet_id           = module.networking.private_subnet_id
      }
    }
  }

  initial_node_labels {
    key   = "meshguard.io/role"
    value = "gateway"
  }
}
