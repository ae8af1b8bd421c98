# prod.tfvars: production. terraform plan -var-file=environments/prod.tfvars
# Every variable not set here keeps its default (variables.tf).

environment = "prod"
region      = "us-east-1"
az_count    = 3
vpc_cidr    = "10.0.0.0/16"

api_domain_name = "api.shop.example.com"
route53_zone_id = "Z0123456789EXAMPLE"
# The name the Ingress gives the ALB (deploy/k8s/overlays/prod). Leave it
# empty on the very first apply, before the ALB exists (deploy/README.md).
api_alb_name = "orders-prod-api"

eks_version                = "1.31"
eks_endpoint_public_access = false
eks_private_access_cidrs   = ["10.99.0.0/16"]
eks_admin_role_arns        = ["arn:aws:iam::123456789012:role/orders-deployer"]
node_instance_types        = ["m6i.xlarge", "m6a.xlarge"]
node_min_per_az            = 2
node_max_per_az            = 12

db_instance_class         = "db.r6g.xlarge"
db_replica_instance_class = "db.r6g.large"
db_backup_retention_days  = 14

redis_node_type = "cache.r7g.large"

mq_instance_type  = "mq.m5.large"
mq_engine_version = "3.13"

alarm_emails = ["orders-oncall@example.com"]

tags = {
  CostCentre         = "shop-platform"
  DataClassification = "pci"
}
