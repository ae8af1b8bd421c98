# outputs.tf: what the Kubernetes side and the operators need after apply
# (deploy/README.md shows where each one goes). Endpoints and ARNs only:
# secret values stay in Secrets Manager.

# ---- network ----------------------------------------------------------------------

output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.main.id
}

output "availability_zones" {
  description = "The zones the stack is spread over, in subnet order."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone (the ALB; tagged kubernetes.io/role/elb)."
  value       = aws_subnet.public[*].id
}

output "app_subnet_ids" {
  description = "Private app subnets, one per zone (EKS nodes and pods)."
  value       = aws_subnet.app[*].id
}

output "data_subnet_ids" {
  description = "Private data subnets, one per zone (RDS, ElastiCache, Amazon MQ)."
  value       = aws_subnet.data[*].id
}

output "node_security_group_id" {
  description = "Security group of the EKS nodes, the only source the data tier accepts."
  value       = aws_security_group.nodes.id
}

# ---- EKS ----------------------------------------------------------------------

output "eks_cluster_name" {
  description = "Name of the EKS cluster (the AWS Load Balancer Controller's and cluster autoscaler's clusterName)."
  value       = aws_eks_cluster.main.name
}

output "eks_cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.main.endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${aws_eks_cluster.main.name}"
}

output "eks_oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (IRSA)."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "irsa_role_arns" {
  description = "IRSA role ARN per add-on (alb-controller, cluster-autoscaler, external-secrets, keda-operator), for the eks.amazonaws.com/role-arn annotation of its service account."
  value       = { for k, r in aws_iam_role.irsa : k => r.arn }
}

output "ecr_repository_urls" {
  description = "ECR repository URL per image: orders (every daemon and orderctl) and orders-migrate (the migration Job), for the overlay's images."
  value       = { for k, r in aws_ecr_repository.images : k => r.repository_url }
}

# ---- data services -----------------------------------------------------------------

output "rds_endpoint" {
  description = "host:port of the PostgreSQL primary (the Multi-AZ endpoint that follows a failover)."
  value       = aws_db_instance.primary.endpoint
}

output "rds_replica_endpoint" {
  description = "host:port of the PostgreSQL read replica."
  value       = aws_db_instance.replica.endpoint
}

output "rds_master_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master credentials (rotated by RDS; for making the application roles, deploy/README.md)."
  value       = aws_db_instance.primary.master_user_secret[0].secret_arn
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the Redis replication group (TLS, port 6379; follows a failover)."
  value       = aws_elasticache_replication_group.redis.primary_endpoint_address
}

output "redis_reader_endpoint" {
  description = "Reader endpoint of the Redis replication group."
  value       = aws_elasticache_replication_group.redis.reader_endpoint_address
}

output "mq_amqps_endpoint" {
  description = "AMQPS endpoint of the RabbitMQ cluster (one name for all three nodes)."
  value       = aws_mq_broker.rabbitmq.instances[0].endpoints[0]
}

output "mq_management_url" {
  description = "HTTPS URL of the RabbitMQ management API and console (private; KEDA's http mode)."
  value       = aws_mq_broker.rabbitmq.instances[0].console_url
}

output "secret_arns" {
  description = "Secrets Manager ARN per secret: app, card-keys, migrate, rabbitmq-management (External Secrets) and the operators' redis-auth-token, mq-admin, mq-app, db-app, db-owner."
  value = merge(
    { for k, s in aws_secretsmanager_secret.cluster : k => s.arn },
    { for k, s in aws_secretsmanager_secret.infra : k => s.arn },
  )
}

# ---- storage and keys ---------------------------------------------------------------

output "logs_bucket" {
  description = "Name of the logs bucket."
  value       = module.logs_bucket.id
}

output "backups_bucket" {
  description = "Name of the backups bucket."
  value       = module.backups_bucket.id
}

output "kms_key_arns" {
  description = "ARN per KMS key (rds, eks, s3, data, logs)."
  value       = { for k, key in aws_kms_key.this : k => key.arn }
}

# ---- edge and alarms ----------------------------------------------------------------

output "acm_certificate_arn" {
  description = "ARN of the API's certificate, for the Ingress annotation alb.ingress.kubernetes.io/certificate-arn."
  value       = aws_acm_certificate.api.arn
}

output "acm_validation_records" {
  description = "DNS records that validate the certificate, to add by hand when route53_zone_id is empty."
  value = [for o in aws_acm_certificate.api.domain_validation_options : {
    name  = o.resource_record_name
    type  = o.resource_record_type
    value = o.resource_record_value
  }]
}

output "waf_web_acl_arn" {
  description = "ARN of the WAF web ACL, for the Ingress annotation alb.ingress.kubernetes.io/wafv2-acl-arn."
  value       = aws_wafv2_web_acl.api.arn
}

output "alarm_topic_arn" {
  description = "ARN of the SNS topic every alarm and RDS event is sent to."
  value       = aws_sns_topic.alarms.arn
}
