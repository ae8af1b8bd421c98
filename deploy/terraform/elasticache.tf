# elasticache.tf: Redis 7 (carts, idempotency keys, product cache, rate
# limit counters). One primary and a replica in each other zone; when the
# primary or its zone fails, ElastiCache promotes a replica and moves the
# primary endpoint to it (tens of seconds; the API's Redis pool reconnects).
# Encrypted at rest with the data key and in transit with TLS; clients
# authenticate with the AUTH token from Secrets Manager. Redis is never the
# only copy of anything (ARCHITECTURE.md), so eviction under memory
# pressure loses speed, not orders.

locals {
  redis_id = "${local.name}-redis"
}

resource "aws_elasticache_subnet_group" "main" {
  name        = "${local.name}-redis"
  description = "Data subnets of ${local.name}, one per zone"
  subnet_ids  = aws_subnet.data[*].id
}

resource "aws_elasticache_parameter_group" "redis" {
  name        = "${local.name}-redis7"
  family      = "redis7"
  description = "${local.name}: evict only keys with a TTL"

  # Carts, idempotency keys, cache entries and rate-limit counters all have
  # a TTL; evicting among them keeps writes working when memory is short.
  parameter {
    name  = "maxmemory-policy"
    value = "volatile-lru"
  }
}

resource "aws_cloudwatch_log_group" "redis" {
  for_each = toset(["slow-log", "engine-log"])

  name              = "/aws/elasticache/${local.name}-redis/${each.key}"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

resource "aws_elasticache_replication_group" "redis" {
  replication_group_id = local.redis_id
  description          = "${local.name}: carts, idempotency keys, product cache, rate limits"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.redis.name

  num_cache_clusters          = var.az_count
  preferred_cache_cluster_azs = local.azs
  automatic_failover_enabled  = true
  multi_az_enabled            = true

  subnet_group_name  = aws_elasticache_subnet_group.main.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this["data"].arn
  transit_encryption_enabled = true
  auth_token                 = aws_secretsmanager_secret_version.redis_auth_token.secret_string
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = 7
  snapshot_window            = "01:00-02:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  dynamic "log_delivery_configuration" {
    for_each = aws_cloudwatch_log_group.redis
    content {
      destination      = log_delivery_configuration.value.name
      destination_type = "cloudwatch-logs"
      log_format       = "json"
      log_type         = log_delivery_configuration.key
    }
  }
}
