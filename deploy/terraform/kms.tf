# kms.tf: one customer-managed key per purpose, each rotated yearly, so
# that access to one kind of data can be granted, audited and revoked
# without the others:
#   rds   PostgreSQL storage, snapshots, Performance Insights
#   eks   Kubernetes Secrets (envelope encryption in etcd), ECR images
#   s3    the logs and backups buckets
#   data  ElastiCache at rest and the Secrets Manager secrets (Redis token,
#         broker admin, RDS master, application keys). Amazon MQ for
#         RabbitMQ takes no customer key: its volumes are encrypted with an
#         AWS-owned key, and card data in messages is sealed by the API.
#   logs  CloudWatch log groups and the alarm SNS topic
# Every key policy leaves administration to the account's IAM policies and
# names the AWS services that encrypt on their own behalf.

locals {
  kms_keys = {
    rds  = "RDS PostgreSQL storage, snapshots and Performance Insights"
    eks  = "EKS Kubernetes Secrets and ECR images"
    s3   = "S3 logs and backups buckets"
    data = "ElastiCache Redis at rest and Secrets Manager secrets"
    logs = "CloudWatch log groups and the alarm topic"
  }

  kms_policies = {
    rds  = data.aws_iam_policy_document.kms_account.json
    eks  = data.aws_iam_policy_document.kms_account.json
    s3   = data.aws_iam_policy_document.kms_s3.json
    data = data.aws_iam_policy_document.kms_account.json
    logs = data.aws_iam_policy_document.kms_logs.json
  }
}

resource "aws_kms_key" "this" {
  for_each = local.kms_keys

  description             = "${local.name}: ${each.value}"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = local.kms_policies[each.key]
  tags                    = { Name = "${local.name}-${each.key}" }
}

resource "aws_kms_alias" "this" {
  for_each = local.kms_keys

  name          = "alias/${local.name}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}

# The account's IAM policies decide who uses and administers the key.
data "aws_iam_policy_document" "kms_account" {
  statement {
    sid       = "AccountAdministersThroughIAM"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

# S3 server access logs and VPC flow logs are written by AWS services into
# the SSE-KMS logs bucket: they need to make data keys.
data "aws_iam_policy_document" "kms_s3" {
  source_policy_documents = [data.aws_iam_policy_document.kms_account.json]

  statement {
    sid       = "LogDeliveryEncrypts"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt", "kms:DescribeKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com", "delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "kms_logs" {
  source_policy_documents = [data.aws_iam_policy_document.kms_account.json]

  statement {
    sid       = "CloudWatchLogsEncrypts"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }

  # CloudWatch alarms publish to the encrypted SNS topic.
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # RDS event subscriptions (failover, failure, low storage) publish there too.
  statement {
    sid       = "RdsEventsPublish"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["events.rds.amazonaws.com"]
    }
  }
}
