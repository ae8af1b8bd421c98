# s3.tf: the two buckets of the stack, both made by modules/secure-bucket
# (SSE-KMS, public access blocked, TLS 1.2+ only, versioned, lifecycle).
#   logs     VPC flow logs, S3 server access logs, exported logs; kept
#            logs_expiration_days (a year and more, PCI-DSS 10.5.1)
#   backups  database exports (pg_dump, RDS snapshot exports), RabbitMQ
#            definitions; every access to it is logged into the logs bucket
# Application load balancer access logs are not written here: ALBs deliver
# them to SSE-S3 buckets only. The WAF logs every request at the ALB instead
# (alb_waf.tf).

locals {
  logs_bucket_name    = "${local.name}-logs-${local.account_id}-${local.region}"
  backups_bucket_name = "${local.name}-backups-${local.account_id}-${local.region}"
  logs_bucket_arn     = "arn:${local.partition}:s3:::${local.logs_bucket_name}"
}

module "logs_bucket" {
  source = "./modules/secure-bucket"

  name                  = local.logs_bucket_name
  kms_key_arn           = aws_kms_key.this["s3"].arn
  archive_after_days    = 90
  archive_storage_class = "GLACIER_IR"
  expiration_days       = var.logs_expiration_days
  policy_documents      = [data.aws_iam_policy_document.logs_bucket_delivery.json]
}

module "backups_bucket" {
  source = "./modules/secure-bucket"

  name                  = local.backups_bucket_name
  kms_key_arn           = aws_kms_key.this["s3"].arn
  archive_after_days    = 60
  archive_storage_class = "GLACIER"
  expiration_days       = var.backups_expiration_days
  access_log_bucket     = module.logs_bucket.id
}

# Who may write into the logs bucket besides the account's own roles.
data "aws_iam_policy_document" "logs_bucket_delivery" {
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${local.logs_bucket_arn}/s3-access/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:s3:::${local.backups_bucket_name}"]
    }
  }

  statement {
    sid       = "VpcFlowLogsWrite"
    actions   = ["s3:PutObject"]
    resources = ["${local.logs_bucket_arn}/vpc-flow-logs/AWSLogs/${local.account_id}/*"]

    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:*"]
    }
  }

  statement {
    sid       = "VpcFlowLogsAclCheck"
    actions   = ["s3:GetBucketAcl", "s3:ListBucket"]
    resources = [local.logs_bucket_arn]

    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}
