# security_groups.tf: who may talk to whom. The data tier takes connections
# from the EKS nodes' security group only, each on its one port; nothing in
# it may start a connection. The ALB's security groups are the AWS Load
# Balancer Controller's (it opens the pods' port to its ALB alone).

# Carried by every EKS node (launch template in eks.tf) besides the cluster
# security group that EKS manages; the data tier trusts this one alone.
# Pods share their node's security groups (VPC CNI, no per-pod groups).
resource "aws_security_group" "nodes" {
  name        = "${local.name}-nodes"
  description = "EKS worker nodes of ${local.name}: the only source the data tier accepts"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-nodes" }
}

resource "aws_security_group" "rds" {
  name        = "${local.name}-rds"
  description = "PostgreSQL of ${local.name}: 5432 from the EKS nodes only"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-rds" }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_nodes" {
  security_group_id            = aws_security_group.rds.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from the EKS nodes"
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "Redis of ${local.name}: 6379 (TLS) from the EKS nodes only"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-redis" }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_nodes" {
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "Redis (TLS) from the EKS nodes"
}

resource "aws_security_group" "mq" {
  name        = "${local.name}-mq"
  description = "RabbitMQ of ${local.name}: AMQPS 5671 and the management API 443 from the EKS nodes only"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-mq" }
}

resource "aws_vpc_security_group_ingress_rule" "mq_amqps_from_nodes" {
  security_group_id            = aws_security_group.mq.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 5671
  to_port                      = 5671
  description                  = "AMQP over TLS from the EKS nodes (daemons, orderctl)"
}

# KEDA's rabbitmq trigger reads queue lengths (ready and unacknowledged)
# from the management API.
resource "aws_vpc_security_group_ingress_rule" "mq_management_from_nodes" {
  security_group_id            = aws_security_group.mq.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "RabbitMQ management API (HTTPS) from the EKS nodes (KEDA)"
}

resource "aws_security_group" "endpoints" {
  name        = "${local.name}-vpc-endpoints"
  description = "Interface VPC endpoints of ${local.name}: HTTPS from the EKS nodes only"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-vpc-endpoints" }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_nodes" {
  security_group_id            = aws_security_group.endpoints.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "AWS APIs from the EKS nodes"
}

# The private EKS API endpoint, from the deployers' VPN or bastion ranges.
resource "aws_vpc_security_group_ingress_rule" "eks_api_from_operators" {
  for_each = toset(var.eks_private_access_cidrs)

  security_group_id = aws_eks_cluster.main.vpc_config[0].cluster_security_group_id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "Kubernetes API from the operators' network"
}
