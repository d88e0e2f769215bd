# One dedicated tenant or customer-operated install on AWS: private network with the egress
# path through the egress proxy, the customer-managed key, the WORM audit archive, log shipping
# to the SIEM, workload identity, and a private EKS cluster with two node groups: a system group
# for the cluster's add-ons and the agents, and a tainted gateway group that alone runs the
# gateway and its egress proxy (the only nodes whose security group opens the allowlist).
locals {
  tags = merge(var.tags, { "meshguard.io/install" = var.name })
  # The chart's values this install needs, from one place: the gateway's pods land on the
  # gateway group, whose taint they tolerate.
  gateway_node_label = { "meshguard.io/role" = "gateway" }
  # Container Insights (the amazon-cloudwatch-observability add-on) writes every container's
  # output here, the gateway's audit and alert stream included; the siem module creates the
  # group first, with the key and a retention, and forwards it to the SIEM.
  siem_log_group = "/aws/containerinsights/${var.name}/application"
  # The storage class of the gateways' volumes (storage_class_manifest), named in helm_values.
  storage_class = "${var.name}-encrypted"
}

data "aws_partition" "current" {}

module "kms" {
  source               = "../kms/aws"
  name                 = var.name
  region               = var.region
  rotation_period_days = var.kms_rotation_period_days
  tags                 = local.tags
}

module "networking" {
  source            = "../networking/aws"
  name              = var.name
  region            = var.region
  cidr_block        = var.vpc_cidr_block
  egress_cidrs      = var.egress_cidrs
  egress_proxy_port = var.egress_proxy_port
  kms_key_arn       = module.kms.key_arn
  tags              = local.tags
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
  log_group_name  = local.siem_log_group
  region          = var.region
  kms_key_arn     = module.kms.key_arn
  destination_arn = var.siem_destination_arn
  retention_days  = var.log_retention_days
  tags            = local.tags
}

module "identity" {
  source               = "../identity/aws"
  name                 = var.name
  oidc_provider_arn    = aws_iam_openid_connect_provider.cluster.arn
  oidc_issuer_host     = local.oidc_issuer_host
  namespace            = var.namespace
  service_account      = var.service_account
  kms_key_arn          = module.kms.key_arn
  archive_bucket_arn   = module.archive.bucket_arn
  log_group_arn        = module.siem.log_group_arn
  cluster_arn          = aws_eks_cluster.this.arn
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

# EKS envelope-encrypts Kubernetes secrets with the key as the cluster's role: the key policy
# lets the account's IAM policies grant it, and this one does.
data "aws_iam_policy_document" "cluster_encryption" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]
    resources = [module.kms.key_arn]
  }
}

resource "aws_iam_role_policy" "cluster_encryption" {
  name   = "secrets-encryption"
  role   = aws_iam_role.cluster.id
  policy = data.aws_iam_policy_document.cluster_encryption.json
}

# The control plane's logs: created here, before the cluster, so that they are encrypted with
# the key and expire (EKS would create the group itself, unencrypted and kept forever).
resource "aws_cloudwatch_log_group" "cluster" {
  region            = var.region
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms.key_arn
  tags              = local.tags
}

# The API server is reachable only inside the VPC; Kubernetes secrets are envelope-encrypted
# with the customer-managed key; the control plane's API, audit and authenticator logs are kept.
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

  tags = local.tags
  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_iam_role_policy.cluster_encryption,
    aws_cloudwatch_log_group.cluster,
  ]
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

# CloudWatchAgentServerPolicy: the Container Insights add-on's agents ship the pods' output.
resource "aws_iam_role_policy_attachment" "node" {
  for_each   = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly", "CloudWatchAgentServerPolicy"])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

# The nodes' launch templates: root volumes encrypted with the customer-managed key (EC2 Auto
# Scaling may use it: the kms module's key policy), IMDSv2 only, and the security groups: every
# node the workloads' group, the gateway's nodes the egress proxy's as well.
resource "aws_launch_template" "node" {
  for_each    = local.node_groups
  region      = var.region
  name        = "${var.name}-${each.key}"
  description = "MeshGuard ${var.name}: EKS ${each.key} nodes"

  vpc_security_group_ids = each.value.security_group_ids

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.node_disk_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = module.kms.key_arn
      delete_on_termination = true
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  tags = local.tags
}

locals {
  node_groups = {
    system = {
      security_group_ids = [module.networking.workloads_security_group_id]
    }
    gateway = {
      security_group_ids = [module.networking.workloads_security_group_id, module.networking.egress_proxy_security_group_id]
    }
  }
}

# The cluster's add-ons and the agents.
resource "aws_eks_node_group" "system" {
  region          = var.region
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = module.networking.private_subnet_ids
  instance_types  = var.node_instance_types

  launch_template {
    id      = aws_launch_template.node["system"].id
    version = aws_launch_template.node["system"].latest_version
  }

  scaling_config {
    min_size     = var.system_node_count
    desired_size = var.system_node_count
    max_size     = var.system_node_count + 1
  }

  update_config {
    max_unavailable = 1
  }

  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.node]
}

# The gateway and its egress proxy only: tainted, so nothing else lands on the nodes whose
# security group opens the allowlist.
resource "aws_eks_node_group" "gateway" {
  region          = var.region
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-gateway"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = module.networking.private_subnet_ids
  instance_types  = var.node_instance_types

  launch_template {
    id      = aws_launch_template.node["gateway"].id
    version = aws_launch_template.node["gateway"].latest_version
  }

  scaling_config {
    min_size     = var.node_count_min
    desired_size = var.node_count_min
    max_size     = var.node_count_max
  }

  update_config {
    max_unavailable = 1
  }

  taint {
    key    = "meshguard.io/role"
    value  = "gateway"
    effect = "NO_SCHEDULE"
  }

  labels     = local.gateway_node_label
  tags       = local.tags
  depends_on = [aws_iam_role_policy_attachment.node]
}

# The VPC CNI enforces NetworkPolicy only when told to: without it the chart's policies (the
# customer-cloud profile restricts egress) are accepted and not applied.
resource "aws_eks_addon" "vpc_cni" {
  region                      = var.region
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "vpc-cni"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  configuration_values        = jsonencode({ enableNetworkPolicy = "true" })
  tags                        = local.tags
}

# Container Insights: ships every container's output to the siem module's log group, which it
# finds by name (created before the add-on, with the key and the retention).
resource "aws_eks_addon" "cloudwatch" {
  region                      = var.region
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "amazon-cloudwatch-observability"
  resolve_conflicts_on_create = "OVERWRITE"
  tags                        = local.tags
  depends_on                  = [module.siem, aws_eks_node_group.system]
}

# IAM trusts the cluster's token issuer (IAM Roles for Service Accounts); AWS checks the
# issuer's certificate itself, so no thumbprint is pinned here.
resource "aws_iam_openid_connect_provider" "cluster" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = local.tags
}

# With authentication_mode = "API" only access entries admit anyone to Kubernetes: the
# administrators' role gets one, with the access policy chosen (cluster admin by default).
resource "aws_eks_access_entry" "admin" {
  count         = length(var.admin_principal_arns) > 0 ? 1 : 0
  region        = var.region
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = module.identity.admin_role_arn
  type          = "STANDARD"
  tags          = local.tags
}

resource "aws_eks_access_policy_association" "admin" {
  count         = length(var.admin_principal_arns) > 0 ? 1 : 0
  region        = var.region
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.admin[0].principal_arn
  policy_arn    = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy/${var.admin_access_policy}"

  access_scope {
    type = "cluster"
  }
}

# The gateways' volumes (the chart's claims) need a provisioner: EKS has had no in-tree one
# since Kubernetes 1.23, so without the EBS CSI driver every claim stays Pending. Its
# controller works as this role (IRSA, kube-system's ebs-csi-controller-sa), which may use the
# customer-managed key for the volumes it creates (the storage class output below asks for it).
locals {
  oidc_issuer_host = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.cluster.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer_host}:sub"
      values   = ["system:serviceaccount:kube-system:ebs-csi-controller-sa"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.name}-ebs-csi"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

# The key for the volumes, as the EBS CSI driver's guide for customer-managed keys has it: grants
# only for AWS resources (EBS attaching the volume), and the data-key calls.
data "aws_iam_policy_document" "ebs_csi_key" {
  statement {
    actions   = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    resources = [module.kms.key_arn]
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = [module.kms.key_arn]
  }
}

resource "aws_iam_role_policy" "ebs_csi_key" {
  name   = "volume-encryption"
  role   = aws_iam_role.ebs_csi.id
  policy = data.aws_iam_policy_document.ebs_csi_key.json
}

resource "aws_eks_addon" "ebs_csi" {
  region                      = var.region
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "aws-ebs-csi-driver"
  service_account_role_arn    = aws_iam_role.ebs_csi.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  tags                        = local.tags
  depends_on = [
    aws_iam_role_policy_attachment.ebs_csi,
    aws_iam_role_policy.ebs_csi_key,
    aws_eks_node_group.system,
  ]
}
