# cloudwatch.tf: the alarm topic and the AWS-side alarms. They watch what
# AWS sees of the stack (broker queues, load balancer, database, cache) and
# page through the same topic; Prometheus' rules (deploy/monitoring) watch
# the daemons from inside. Each alarm names its runbook section of
# deploy/README.md.

locals {
  runbook = var.runbook_url

  # ElastiCache names the nodes of a replication group <id>-001, -002, ...
  # (from the configured id, so that the alarm keys are known at plan time).
  redis_nodes = [for i in range(var.az_count) : format("%s-%03d", local.redis_id, i + 1)]

  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = aws_kms_key.this["logs"].arn
}

resource "aws_sns_topic_subscription" "alarm_emails" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# ---- RabbitMQ (Amazon MQ) ---------------------------------------------------------

# Messages in a work queue, ready and unacknowledged: consumers are not
# keeping up even at KEDA's maximum, or are stuck holding deliveries.
resource "aws_cloudwatch_metric_alarm" "queue_depth" {
  for_each = toset(var.work_queues)

  alarm_name          = "${local.name}-queue-depth-${each.key}"
  alarm_description   = "Queue ${each.key} has held more than ${var.queue_depth_alarm_threshold} messages for 15 minutes. Runbook: ${local.runbook}#queue-backlog"
  namespace           = "AWS/AmazonMQ"
  metric_name         = "MessageCount"
  dimensions          = { Broker = aws_mq_broker.rabbitmq.broker_name, VirtualHost = "/", Queue = each.key }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.queue_depth_alarm_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# No consumer on a work queue: every order in it waits. No data is no
# verdict: then the broker stopped reporting, not the consumers.
resource "aws_cloudwatch_metric_alarm" "queue_consumers" {
  for_each = toset(var.work_queues)

  alarm_name          = "${local.name}-queue-no-consumers-${each.key}"
  alarm_description   = "Queue ${each.key} has had no consumer for 5 minutes. Runbook: ${local.runbook}#no-consumers"
  namespace           = "AWS/AmazonMQ"
  metric_name         = "ConsumerCount"
  dimensions          = { Broker = aws_mq_broker.rabbitmq.broker_name, VirtualHost = "/", Queue = each.key }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Anything parked in a dead-letter queue waits for a person.
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = toset(local.dead_letter_queues)

  alarm_name          = "${local.name}-dead-letters-${each.key}"
  alarm_description   = "Messages are parked in ${each.key}. Runbook: ${local.runbook}#dead-letters"
  namespace           = "AWS/AmazonMQ"
  metric_name         = "MessageCount"
  dimensions          = { Broker = aws_mq_broker.rabbitmq.broker_name, VirtualHost = "/", Queue = each.key }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# ---- the API's load balancer (once the Ingress has made it) ----------------------------

# 5xx from the targets and from the ALB itself (no healthy target, timeouts)
# as a share of all requests.
resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  count = var.api_alb_name == "" ? 0 : 1

  alarm_name          = "${local.name}-alb-5xx"
  alarm_description   = "More than ${var.http_5xx_alarm_percent}% of API requests failed with 5xx for 10 minutes. Runbook: ${local.runbook}#http-errors"
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.http_5xx_alarm_percent
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "share"
    expression  = "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"
    label       = "5xx share of requests (%)"
    return_data = true
  }

  metric_query {
    id = "target5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = data.aws_lb.api[0].arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id = "elb5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = data.aws_lb.api[0].arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = data.aws_lb.api[0].arn_suffix }
      stat        = "Sum"
      period      = 300
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_latency_p99" {
  count = var.api_alb_name == "" ? 0 : 1

  alarm_name          = "${local.name}-alb-latency-p99"
  alarm_description   = "p99 API response time above ${var.latency_p99_alarm_seconds} s for 10 minutes. Runbook: ${local.runbook}#latency"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = data.aws_lb.api[0].arn_suffix }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.latency_p99_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# ---- PostgreSQL (RDS) --------------------------------------------------------------

locals {
  db_alarms = {
    cpu = {
      instance    = aws_db_instance.primary.identifier
      metric      = "CPUUtilization"
      statistic   = "Average"
      comparison  = "GreaterThanThreshold"
      threshold   = 80
      periods     = 3
      missing     = "breaching"
      description = "Primary database CPU above 80% for 15 minutes."
    }
    free-storage = {
      instance    = aws_db_instance.primary.identifier
      metric      = "FreeStorageSpace"
      statistic   = "Minimum"
      comparison  = "LessThanThreshold"
      threshold   = 20 * 1024 * 1024 * 1024
      periods     = 1
      missing     = "breaching"
      description = "Primary database has less than 20 GiB of free storage (autoscaling has stopped or hit its ceiling)."
    }
    connections = {
      instance    = aws_db_instance.primary.identifier
      metric      = "DatabaseConnections"
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = var.db_connections_alarm
      periods     = 2
      missing     = "notBreaching"
      description = "More than ${var.db_connections_alarm} connections to the primary for 10 minutes (pools multiplied by replicas)."
    }
    replica-lag = {
      instance    = aws_db_instance.replica.identifier
      metric      = "ReplicaLag"
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = 60
      periods     = 3
      missing     = "breaching"
      description = "Read replica more than 60 s behind for 15 minutes: the finance feed and reports read stale data."
    }
    replica-cpu = {
      instance    = aws_db_instance.replica.identifier
      metric      = "CPUUtilization"
      statistic   = "Average"
      comparison  = "GreaterThanThreshold"
      threshold   = 80
      periods     = 3
      missing     = "breaching"
      description = "Read replica CPU above 80% for 15 minutes."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "database" {
  for_each = local.db_alarms

  alarm_name          = "${local.name}-db-${each.key}"
  alarm_description   = "${each.value.description} Runbook: ${local.runbook}#database-failover"
  namespace           = "AWS/RDS"
  metric_name         = each.value.metric
  dimensions          = { DBInstanceIdentifier = each.value.instance }
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = each.value.periods
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# ---- Redis (ElastiCache) -------------------------------------------------------------

locals {
  redis_alarm_kinds = [
    { name = "engine-cpu", metric = "EngineCPUUtilization", statistic = "Average", threshold = 80, missing = "breaching" },
    { name = "evictions", metric = "Evictions", statistic = "Sum", threshold = 1000, missing = "notBreaching" },
    # Published by replicas only; the primary has no lag.
    { name = "replication-lag", metric = "ReplicationLag", statistic = "Maximum", threshold = 5, missing = "notBreaching" },
    { name = "memory", metric = "DatabaseMemoryUsagePercentage", statistic = "Maximum", threshold = 90, missing = "breaching" },
  ]

  redis_alarms = merge([
    for node in local.redis_nodes : {
      for kind in local.redis_alarm_kinds : "${node}-${kind.name}" => merge(kind, { node = node })
    }
  ]...)
}

resource "aws_cloudwatch_metric_alarm" "redis" {
  for_each = local.redis_alarms

  alarm_name          = "${local.name}-redis-${each.key}"
  alarm_description   = "Redis node ${each.value.node}: ${each.value.metric} above ${each.value.threshold} for 15 minutes. Runbook: ${local.runbook}#redis"
  namespace           = "AWS/ElastiCache"
  metric_name         = each.value.metric
  dimensions          = { CacheClusterId = each.value.node }
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
