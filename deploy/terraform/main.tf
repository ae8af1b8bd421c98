# main.tf: names, tags and the facts about the account and region that the
# other files share.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

# Zones that need no opt-in; the first az_count of them carry the stack.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  name       = "${var.project}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  azs = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  tags = merge({
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
    Repository  = "orders/deploy/terraform"
  }, var.tags)

  # Each work queue parks what keeps failing in <queue>.dlq (lib/mq.c).
  dead_letter_queues = [for q in var.work_queues : "${q}.dlq"]
}
