# Workload identity for the gateway (IAM Roles for Service Accounts: the pod's projected token,
# issued by the cluster's OIDC provider, is exchanged for this role; no static keys) and a role
# for the site's administrators, assumable only with MFA.
data "aws_iam_policy_document" "gateway_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer_host}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gateway" {
  name               = "${var.name}-gateway"
  assume_role_policy = data.aws_iam_policy_document.gateway_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "gateway" {
  statement {
    sid       = "CustomerManagedKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = [var.kms_key_arn]
  }

  dynamic "statement" {
    for_each = var.archive_bucket_arn == null ? [] : [var.archive_bucket_arn]
    content {
      sid       = "AuditArchive"
      actions   = ["s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:GetObjectRetention"]
      resources = [statement.value, "${statement.value}/*"]
    }
  }

  dynamic "statement" {
    for_each = var.log_group_arn == null ? [] : [var.log_group_arn]
    content {
      sid       = "SiemLogs"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      resources = [statement.value, "${statement.value}:*"]
    }
  }
}

resource "aws_iam_role_policy" "gateway" {
  name   = "meshguard-gateway"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.gateway.json
}

data "aws_iam_policy_document" "admin_assume" {
  count = length(var.admin_principal_arns) > 0 ? 1 : 0
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.admin_principal_arns
    }
    condition {
      test     = "Bool"
      variable = "aws:MultiFactorAuthPresent"
      values   = ["true"]
    }
  }
}

resource "aws_iam_role" "admin" {
  count                = length(var.admin_principal_arns) > 0 ? 1 : 0
  name                 = "${var.name}-admin"
  assume_role_policy   = data.aws_iam_policy_document.admin_assume[0].json
  max_session_duration = 3600
  tags                 = var.tags
}

# What the administrators do with the role: find the cluster and reach its API (Kubernetes
# permissions come from the cluster's access entry, which the aws module makes), and read the
# install's logs. Nothing else: the role is for operating MeshGuard, not the account.
data "aws_iam_policy_document" "admin" {
  count = length(var.admin_principal_arns) > 0 ? 1 : 0
  statement {
    sid       = "FindTheCluster"
    actions   = ["eks:ListClusters"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.cluster_arn == null ? [] : [var.cluster_arn]
    content {
      sid       = "UseTheCluster"
      actions   = ["eks:DescribeCluster", "eks:AccessKubernetesApi", "eks:ListAccessEntries", "eks:DescribeAccessEntry"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.log_group_arn == null ? [] : [var.log_group_arn]
    content {
      sid       = "ReadTheLogs"
      actions   = ["logs:DescribeLogStreams", "logs:GetLogEvents", "logs:FilterLogEvents", "logs:StartQuery", "logs:GetQueryResults"]
      resources = [statement.value, "${statement.value}:*"]
    }
  }
}

resource "aws_iam_role_policy" "admin" {
  count  = length(var.admin_principal_arns) > 0 ? 1 : 0
  name   = "meshguard-admin"
  role   = aws_iam_role.admin[0].id
  policy = data.aws_iam_policy_document.admin[0].json
}
