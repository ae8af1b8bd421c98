# mq.tf: RabbitMQ as an Amazon MQ cluster: three nodes in three zones
# behind one private endpoint in the data subnets. The daemons' work queues
# are quorum queues (RabbitMQ 3.13+), replicated on all three nodes, so a
# node or a zone can go without losing a confirmed message; the daemons
# reconnect through the same endpoint. Clients speak AMQP over TLS (5671);
# the management API (443) serves KEDA's queue lengths.
# Amazon MQ takes one user through its API, the administrator; the
# daemons' and KEDA's users are made with it after apply (deploy/README.md),
# with the passwords generated in secrets.tf. Amazon MQ for RabbitMQ
# encrypts its volumes with an AWS-owned key (a customer key cannot be
# chosen); card data in messages is sealed by the API before it is sent.

resource "aws_mq_broker" "rabbitmq" {
  broker_name        = "${local.name}-rabbitmq"
  engine_type        = "RabbitMQ"
  engine_version     = var.mq_engine_version
  host_instance_type = var.mq_instance_type
  deployment_mode    = "CLUSTER_MULTI_AZ"

  publicly_accessible = false
  subnet_ids          = aws_subnet.data[*].id
  security_groups     = [aws_security_group.mq.id]

  authentication_strategy = "simple"
  # Required from RabbitMQ 3.13 on: patch versions arrive in the
  # maintenance window, one node at a time.
  auto_minor_version_upgrade = true
  apply_immediately          = false

  maintenance_window_start_time {
    day_of_week = "SUNDAY"
    time_of_day = "05:30"
    time_zone   = "UTC"
  }

  logs {
    general = true
  }

  user {
    username = var.mq_admin_username
    password = random_password.generated["mq-admin"].result
  }

  # The general log is written from the start.
  depends_on = [aws_cloudwatch_log_resource_policy.mq]
}

# Amazon MQ writes the general log to /aws/amazonmq/broker/<id>/general.
data "aws_iam_policy_document" "mq_logs" {
  statement {
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/amazonmq/*"]

    principals {
      type        = "Service"
      identifiers = ["mq.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_cloudwatch_log_resource_policy" "mq" {
  policy_name     = "${local.name}-amazonmq-logs"
  policy_document = data.aws_iam_policy_document.mq_logs.json
}
