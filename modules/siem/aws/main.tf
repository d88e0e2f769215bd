# The gateway's audit and alert stream lands in a CloudWatch log group (encrypted with the
# customer-managed key, kept retention_days) and is forwarded, as it arrives, to the customer's
# SIEM through a subscription to a Kinesis stream or Firehose the customer owns.
resource "aws_cloudwatch_log_group" "this" {
  region            = var.region
  name              = var.log_group_name
  retention_in_days = var.retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_iam_role" "forwarder" {
  count              = var.destination_arn == null ? 0 : 1
  name_prefix        = "meshguard-to-siem-"
  assume_role_policy = data.aws_iam_policy_document.logs_assume.json
  tags               = var.tags
}

# CloudWatch Logs may assume the role only for this account's log groups (a confused deputy:
# another account's subscription naming this role is refused).
data "aws_caller_identity" "this" {}

data "aws_iam_policy_document" "logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:SourceArn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.this.account_id}:*"]
    }
  }
}

resource "aws_iam_role_policy" "forwarder" {
  count  = var.destination_arn == null ? 0 : 1
  name   = "put-records"
  role   = aws_iam_role.forwarder[0].id
  policy = data.aws_iam_policy_document.put_records.json
}

data "aws_iam_policy_document" "put_records" {
  statement {
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "firehose:PutRecord", "firehose:PutRecordBatch"]
    resources = [coalesce(var.destination_arn, "*")]
  }
}

resource "aws_cloudwatch_log_subscription_filter" "this" {
  count           = var.destination_arn == null ? 0 : 1
  region          = var.region
  name            = "meshguard-to-siem"
  log_group_name  = aws_cloudwatch_log_group.this.name
  filter_pattern  = var.filter_pattern
  destination_arn = var.destination_arn
  role_arn        = aws_iam_role.forwarder[0].arn
  # CloudWatch Logs sends a test record when the filter is made: the role must already be
  # allowed to put it, and the ARN alone does not order the filter after the role's policy.
  depends_on = [aws_iam_role_policy.forwarder]
}
