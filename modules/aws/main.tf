# One dedicated tenant or customer-operated install on AWS: private network with the egress
# path through the egress proxy, the customer-managed key, the WORM audit archive, log shipping
# to the SIEM, workload identity, and a private EKS cluster with a node group for the chart.
locals {
  tags = merge(var.tags, { "meshguard.io/install" = var.name })
}

module "kms" {
  source               = "../kms/aws"
  name                 = var.name
  region               = var.region
  rotation_period_days = var.kms_rotation_period_days
  tags                 = local.tags
}

module "networking" {
  source       = "../networking/aws"
  name         = var.name
  region       = var.region
  cidr_block   = var.vpc_cidr_block
  egress_cidrs = var.egress_cidrs
  tags         = local.tags
}

module "archive" {
  source         = "../archive/aws"
  bucket_name    = var.archive_bucket_name
  region         = var.region
  kms_key_arn    = module.kms.key_arn
  lock_mode      = var.archive_lock_mode
  retention_days = var.archive_retention_days
  writer_arns    = [module.identity.gateway_role_arn]
  tags           = local.tags
}

module "siem" {
  source          = "../siem/aws"
  log_group_name  = "/meshguard/${var.name}"
  region          = var.region
  kms_key_arn     = module.kms.key_arn
  destination_arn = var.siem_destination_arn
  tags            = local.tags
}

module "identity" {
  source               = "../identity/aws"
  name                 = var.name
  oidc_provider_arn    = aws_iam_openid_connect_provider.cluster.arn
  oidc_issuer_host     = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
  namespace            = var.namespace
  kms_key_arn          = module.kms.key_arn
  archive_bucket_arn   = module.archive.bucket_arn
  log_group_arn        = module.siem.log_group_arn
  admin_principal_arns = var.admin_principal_arns
  tags                 = local.tags
}

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

data "aws_partition" "current" {}

# The API server is reachable only inside the VPC; Kubernetes secrets are envelope-encrypted
# with the customer-managed key; the control plane's audit and authenticator logs are kept.
resource "aws_eks_cluster" "this" {
  region                    = var.region
  name                      = var.name
  role_arn                  = aws_iam_role.cluster.arn
  version                   = var.kubernetes_version
  enabled_cluster_log_types = ["api", "audit", "authenticator"]

  vpc_config {
    subnet_ids              = module.networking.private_subnet_ids
    security_group_ids      = [module.networking.workloads_security_group_id]
    endpoint_private_access = true
    endpoint_public_access  = false
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = module.kms.key_arn
    }
  }

  access_config {
    authentication_mode = "API"
  }

  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.cluster]
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each   = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

resource "aws_eks_node_group" "this" {
  region          = var.region
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-gateway"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = module.networking.private_subnet_ids
  instance_types  = var.node_instance_types

  scaling_config {
    min_size     = var.node_count_min
    desired_size = var.node_count_min
    max_size     = var.node_count_max
  }

  update_config {
    max_unavailable = 1
  }

  labels     = { "meshguard.io/role" = "gateway" }
  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.node]
}

# IAM trusts the cluster's token issuer (IAM Roles for Service Accounts); AWS checks the
# issuer's certificate itself, so no thumbprint is pinned here.
resource "aws_iam_openid_connect_provider" "cluster" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = local.tags
}
