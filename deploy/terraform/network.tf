# network.tf: the VPC over az_count zones. Per zone: a public subnet (the
# ALB and a NAT gateway), a private app subnet (EKS nodes and pods) and a
# private data subnet (RDS, ElastiCache, Amazon MQ) with no route out of
# the VPC. Every flow is logged to CloudWatch (90 days at hand) and to the
# logs bucket (kept a year).

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }

  lifecycle {
    precondition {
      condition     = length(data.aws_availability_zones.available.names) >= var.az_count
      error_message = "The region has fewer available zones than az_count."
    }
  }
}

# The default security group allows nothing, so that nothing relies on it.
resource "aws_default_security_group" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = "${local.name}-default-deny" }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = local.name }
}

# Of a /16: app subnets are the first six /19s, public subnets /24s from
# .192.0 and data subnets /24s from .208.0 (10.0.0.0/16: 10.0.192.0/24 ...), so az_count may grow to six
# without renumbering.
resource "aws_subnet" "public" {
  count             = var.az_count
  vpc_id            = aws_vpc.main.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 192 + count.index)

  tags = {
    Name                                  = "${local.name}-public-${local.azs[count.index]}"
    Tier                                  = "public"
    "kubernetes.io/role/elb"              = "1"
    "kubernetes.io/cluster/${local.name}" = "shared"
  }
}

resource "aws_subnet" "app" {
  count             = var.az_count
  vpc_id            = aws_vpc.main.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 3, count.index)

  tags = {
    Name                                  = "${local.name}-app-${local.azs[count.index]}"
    Tier                                  = "app"
    "kubernetes.io/role/internal-elb"     = "1"
    "kubernetes.io/cluster/${local.name}" = "shared"
  }
}

resource "aws_subnet" "data" {
  count             = var.az_count
  vpc_id            = aws_vpc.main.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 208 + count.index)

  tags = {
    Name = "${local.name}-data-${local.azs[count.index]}"
    Tier = "data"
  }
}

# One NAT gateway per zone: losing a zone never cuts the others off.
resource "aws_eip" "nat" {
  count  = var.az_count
  domain = "vpc"
  tags   = { Name = "${local.name}-nat-${local.azs[count.index]}" }
}

resource "aws_nat_gateway" "main" {
  count         = var.az_count
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = { Name = "${local.name}-${local.azs[count.index]}" }

  depends_on = [aws_internet_gateway.main]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id
  tags   = { Name = "${local.name}-public" }

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.main.id
  }
}

resource "aws_route_table_association" "public" {
  count          = var.az_count
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "app" {
  count  = var.az_count
  vpc_id = aws_vpc.main.id
  tags   = { Name = "${local.name}-app-${local.azs[count.index]}" }

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.main[count.index].id
  }
}

resource "aws_route_table_association" "app" {
  count          = var.az_count
  subnet_id      = aws_subnet.app[count.index].id
  route_table_id = aws_route_table.app[count.index].id
}

# The data tier has only the VPC's local route: managed services need no
# way out, and nothing there can be reached from outside.
resource "aws_route_table" "data" {
  count  = var.az_count
  vpc_id = aws_vpc.main.id
  tags   = { Name = "${local.name}-data-${local.azs[count.index]}" }
}

resource "aws_route_table_association" "data" {
  count          = var.az_count
  subnet_id      = aws_subnet.data[count.index].id
  route_table_id = aws_route_table.data[count.index].id
}

# ---- VPC endpoints: AWS APIs without the NAT gateways ---------------------------

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat(aws_route_table.app[*].id, aws_route_table.data[*].id)
  tags              = { Name = "${local.name}-s3" }
}

# Image pulls, IRSA token exchange, logs, secrets and KMS stay inside the
# VPC (and keep working while the NAT gateways are saturated).
resource "aws_vpc_endpoint" "interface" {
  for_each = toset(["ecr.api", "ecr.dkr", "sts", "logs", "secretsmanager", "kms"])

  vpc_id              = aws_vpc.main.id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.app[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  tags                = { Name = "${local.name}-${each.key}" }
}

# ---- flow logs ------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/aws/vpc/${local.name}/flow-logs"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

resource "aws_flow_log" "cloudwatch" {
  vpc_id                   = aws_vpc.main.id
  traffic_type             = "ALL"
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 60
  tags                     = { Name = "${local.name}-cloudwatch" }
}

resource "aws_flow_log" "s3" {
  vpc_id               = aws_vpc.main.id
  traffic_type         = "ALL"
  log_destination_type = "s3"
  log_destination      = "${module.logs_bucket.arn}/vpc-flow-logs/"
  tags                 = { Name = "${local.name}-s3" }

  destination_options {
    file_format        = "parquet"
    per_hour_partition = true
  }

  # The bucket policy must let log delivery in before the first write.
  depends_on = [module.logs_bucket]
}
