# rds.tf: PostgreSQL 15. A Multi-AZ primary (a synchronous standby in
# another zone; failover in one to two minutes, the endpoint name stays)
# and a read replica for the finance feed and reporting. Storage, backups,
# snapshots and Performance Insights are encrypted with the rds key; the
# server refuses connections without TLS (rds.force_ssl) or older than TLS
# 1.2; automated backups give point-in-time recovery for
# db_backup_retention_days; deletion needs deletion_protection turned off
# first and leaves a final snapshot.

resource "aws_db_subnet_group" "main" {
  name        = "${local.name}-postgres"
  description = "Data subnets of ${local.name}, one per zone"
  subnet_ids  = aws_subnet.data[*].id
}

resource "aws_db_parameter_group" "postgres" {
  name        = "${local.name}-postgres15"
  family      = "postgres15"
  description = "${local.name}: TLS only, connection and slow statement logging"

  # PCI-DSS 4.2.1: every connection encrypted, TLS 1.2 and later.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "ssl_min_protocol_version"
    value = "TLSv1.2"
  }

  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  # Statements slower than a second are logged with their text, never their
  # bound values: no stored value, sealed or not, reaches a log.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_parameter_max_length"
    value = "0"
  }

  parameter {
    name  = "log_parameter_max_length_on_error"
    value = "0"
  }

  # A transaction left open by a stuck consumer must not hold row locks on
  # stock for ever.
  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "60000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "primary" {
  identifier     = "${local.name}-postgres"
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  db_name                       = var.db_name
  username                      = var.db_master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this["data"].arn

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.postgres.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  storage_type          = "gp3"
  allocated_storage     = var.db_allocated_storage_gb
  max_allocated_storage = var.db_max_allocated_storage_gb
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this["rds"].arn

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.name}-postgres-final"

  iam_database_authentication_enabled = var.db_iam_auth_enabled

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this["rds"].arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 15
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  auto_minor_version_upgrade = true
  apply_immediately          = false

  depends_on = [aws_cloudwatch_log_group.rds]
}

# Asynchronous, in its own zone; promoted by hand only if the primary and
# its standby are both lost (deploy/README.md).
resource "aws_db_instance" "replica" {
  identifier          = "${local.name}-postgres-replica"
  replicate_source_db = aws_db_instance.primary.identifier
  instance_class      = var.db_replica_instance_class

  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.postgres.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  storage_type          = "gp3"
  max_allocated_storage = var.db_max_allocated_storage_gb
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this["rds"].arn

  # Kept so that a promoted replica has point-in-time recovery at once.
  backup_retention_period = var.db_backup_retention_days
  deletion_protection     = true
  skip_final_snapshot     = true

  iam_database_authentication_enabled = var.db_iam_auth_enabled

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this["rds"].arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 15
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  auto_minor_version_upgrade = true
  apply_immediately          = false

  depends_on = [aws_cloudwatch_log_group.rds]
}

# RDS makes these groups itself when it exports logs; made here first so
# that they are encrypted and expire.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = {
    for pair in setproduct(["${local.name}-postgres", "${local.name}-postgres-replica"], ["postgresql", "upgrade"]) :
    "${pair[0]}/${pair[1]}" => pair
  }

  name              = "/aws/rds/instance/${each.value[0]}/${each.value[1]}"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

# Failovers, failures and low storage reach the alarm topic as they happen.
resource "aws_db_event_subscription" "postgres" {
  name        = "${local.name}-postgres"
  sns_topic   = aws_sns_topic.alarms.arn
  source_type = "db-instance"
  source_ids  = [aws_db_instance.primary.identifier, aws_db_instance.replica.identifier]
  event_categories = [
    "availability",
    "failover",
    "failure",
    "low storage",
    "maintenance",
    "recovery",
  ]
}
