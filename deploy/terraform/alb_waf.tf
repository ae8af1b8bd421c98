# alb_waf.tf: what the API's public edge needs from Terraform. The ALB
# itself is made by the AWS Load Balancer Controller from the Ingress in
# deploy/k8s (internet-facing, public subnets, IP targets, HTTPS only);
# Terraform makes its TLS certificate and the WAF web ACL (PCI-DSS 6.4.2)
# and outputs their ARNs for the Ingress annotations
# alb.ingress.kubernetes.io/certificate-arn and .../wafv2-acl-arn. Once the
# ALB exists (api_alb_name), the API's DNS name and the ALB alarms follow.

# ---- certificate ---------------------------------------------------------------

resource "aws_acm_certificate" "api" {
  domain_name       = var.api_domain_name
  validation_method = "DNS"

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "api_validation" {
  for_each = var.route53_zone_id == "" ? {} : {
    for o in aws_acm_certificate.api.domain_validation_options : o.domain_name => o
  }

  zone_id         = var.route53_zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "api" {
  count = var.route53_zone_id == "" ? 0 : 1

  certificate_arn         = aws_acm_certificate.api.arn
  validation_record_fqdns = [for r in aws_route53_record.api_validation : r.fqdn]
}

# ---- WAF -------------------------------------------------------------------------

locals {
  # AWS managed rule groups, in evaluation order. The common rule set's
  # 8 KB body limit only counts: the API refuses bodies over 64 KiB itself
  # (413), and a large cart is a legitimate checkout.
  waf_managed_rule_groups = {
    AWSManagedRulesAmazonIpReputationList = { priority = 10, count_only = [] }
    AWSManagedRulesCommonRuleSet          = { priority = 20, count_only = ["SizeRestrictions_BODY"] }
    AWSManagedRulesKnownBadInputsRuleSet  = { priority = 30, count_only = [] }
    AWSManagedRulesSQLiRuleSet            = { priority = 40, count_only = [] }
  }
}

resource "aws_wafv2_web_acl" "api" {
  name        = "${local.name}-api"
  description = "${local.name}: managed rule groups and a per-IP rate limit in front of the API"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  # Cheapest first: a flooding address is refused before any inspection.
  rule {
    name     = "rate-limit-per-ip"
    priority = 1

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit                 = var.waf_rate_limit_per_ip
        evaluation_window_sec = 300
        aggregate_key_type    = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-rate-limit-per-ip"
      sampled_requests_enabled   = true
    }
  }

  dynamic "rule" {
    for_each = local.waf_managed_rule_groups
    content {
      name     = rule.key
      priority = rule.value.priority

      override_action {
        none {}
      }

      statement {
        managed_rule_group_statement {
          vendor_name = "AWS"
          name        = rule.key

          dynamic "rule_action_override" {
            for_each = rule.value.count_only
            content {
              name = rule_action_override.value
              action_to_use {
                count {}
              }
            }
          }
        }
      }

      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "${local.name}-${rule.key}"
        sampled_requests_enabled   = true
      }
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${local.name}-api"
    sampled_requests_enabled   = true
  }
}

# Every request the WAF sees, with its verdict: the ALB's access log (ALBs
# cannot write to SSE-KMS buckets). Bearer tokens are API keys: redacted.
resource "aws_cloudwatch_log_group" "waf" {
  # WAF requires the aws-waf-logs- prefix.
  name              = "aws-waf-logs-${local.name}-api"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

resource "aws_wafv2_web_acl_logging_configuration" "api" {
  resource_arn            = aws_wafv2_web_acl.api.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]

  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}

# ---- the ALB, once the controller has made it ---------------------------------------

# Looked up by the name the Ingress gives it, for the ALB alarms.
data "aws_lb" "api" {
  count = var.api_alb_name == "" ? 0 : 1
  name  = var.api_alb_name
}

# The API's name points at the ALB (when Terraform holds the zone).
resource "aws_route53_record" "api" {
  count = var.api_alb_name != "" && var.route53_zone_id != "" ? 1 : 0

  zone_id = var.route53_zone_id
  name    = var.api_domain_name
  type    = "A"

  alias {
    name                   = data.aws_lb.api[0].dns_name
    zone_id                = data.aws_lb.api[0].zone_id
    evaluate_target_health = true
  }
}
