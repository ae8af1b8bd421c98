# variables.tf: every input of the configuration, with its type, its
# meaning and, where a wrong value would weaken availability or security,
# a validation. environments/prod.tfvars sets them for production.

# ---- naming and placement ---------------------------------------------------

variable "project" {
  description = "Short project name, the first part of every resource name (e.g. orders-prod-postgres)."
  type        = string
  default     = "orders"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.project))
    error_message = "project must be 2-16 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod), the second part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.environment))
    error_message = "environment must be 2-10 lower-case letters or digits, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the whole stack (the disaster-recovery region is a second, separate apply; see deploy/README.md)."
  type        = string
}

variable "tags" {
  description = "Extra tags for every resource (cost centre, owner, data classification), merged over the defaults."
  type        = map(string)
  default     = {}
}

variable "az_count" {
  description = "Number of availability zones to spread every tier over: one public, one app and one data subnet, one NAT gateway and one node group in each."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 3 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 3 to 6: the availability target needs three zones."
  }
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC. Of a /16, each zone gets a /19 app subnet (pods take VPC addresses) and a /24 public and a /24 data subnet."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be an IPv4 CIDR block of /16 or larger."
  }
}

# ---- EKS ----------------------------------------------------------------------

variable "eks_version" {
  description = "Kubernetes version of the EKS control plane and its managed node groups."
  type        = string
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.eks_version))
    error_message = "eks_version must look like 1.31."
  }
}

variable "eks_endpoint_public_access" {
  description = "Whether the EKS API endpoint is also reachable from the internet (only from eks_public_access_cidrs). false keeps it private to the VPC (reach it through a VPN or a bastion)."
  type        = bool
  default     = false
}

variable "eks_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public EKS API endpoint when eks_endpoint_public_access is true (the deployers' VPN egress addresses)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.eks_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "eks_public_access_cidrs must be CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "eks_private_access_cidrs" {
  description = "CIDR blocks inside the network (VPN, bastion, CI runners) that may reach the private EKS API endpoint on 443."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.eks_private_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "eks_private_access_cidrs must be CIDR blocks, and never 0.0.0.0/0."
  }
}

variable "eks_admin_role_arns" {
  description = "IAM role ARNs given cluster-admin access through EKS access entries (the deployers' and the CI role)."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node groups (several for capacity; the first is preferred)."
  type        = list(string)
  default     = ["m6i.xlarge", "m6a.xlarge"]
}

variable "node_min_per_az" {
  description = "Minimum nodes in each zone's node group: enough for the API's and every consumer's minimum replicas to survive the loss of one zone."
  type        = number
  default     = 2

  validation {
    condition     = var.node_min_per_az >= 1
    error_message = "node_min_per_az must be at least 1."
  }
}

variable "node_max_per_az" {
  description = "Maximum nodes in each zone's node group, the cluster autoscaler's ceiling (and the cost ceiling)."
  type        = number
  default     = 12

  validation {
    condition     = var.node_max_per_az >= var.node_min_per_az
    error_message = "node_max_per_az must be at least node_min_per_az."
  }
}

variable "node_disk_size_gb" {
  description = "Root volume size of each node in GiB (encrypted gp3)."
  type        = number
  default     = 50
}

# ---- PostgreSQL (RDS) ---------------------------------------------------------

variable "db_instance_class" {
  description = "RDS instance class of the Multi-AZ primary."
  type        = string
  default     = "db.r6g.xlarge"
}

variable "db_replica_instance_class" {
  description = "RDS instance class of the read replica (finance feed, reporting, orderctl events)."
  type        = string
  default     = "db.r6g.large"
}

variable "db_engine_version" {
  description = "PostgreSQL version; the major version alone (15) lets RDS apply minor upgrades in the maintenance window."
  type        = string
  default     = "15"

  validation {
    condition     = can(regex("^15(\\.[0-9]+)?$", var.db_engine_version))
    error_message = "db_engine_version must be PostgreSQL 15 (the migrations and the parameter group family are written for it)."
  }
}

variable "db_allocated_storage_gb" {
  description = "Initial gp3 storage of the primary in GiB."
  type        = number
  default     = 200
}

variable "db_max_allocated_storage_gb" {
  description = "Ceiling of RDS storage autoscaling in GiB."
  type        = number
  default     = 1000

  validation {
    condition     = var.db_max_allocated_storage_gb >= var.db_allocated_storage_gb
    error_message = "db_max_allocated_storage_gb must be at least db_allocated_storage_gb."
  }
}

variable "db_name" {
  description = "Name of the application database the migrations run in."
  type        = string
  default     = "orders"
}

variable "db_master_username" {
  description = "Master user of the database; its password is generated and rotated by RDS in Secrets Manager, never set here."
  type        = string
  default     = "orders_admin"
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window) of the primary."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be from 7 to 35."
  }
}

variable "db_iam_auth_enabled" {
  description = "Whether IAM database authentication is enabled besides passwords (the daemons use passwords; turn on for people and tools that log in with IAM)."
  type        = bool
  default     = false
}

# ---- Redis (ElastiCache) -------------------------------------------------------

variable "redis_node_type" {
  description = "ElastiCache node type of every Redis node (one primary and a replica in each other zone)."
  type        = string
  default     = "cache.r7g.large"
}

variable "redis_engine_version" {
  description = "Redis engine version (7.x)."
  type        = string
  default     = "7.1"

  validation {
    condition     = can(regex("^7\\.", var.redis_engine_version))
    error_message = "redis_engine_version must be 7.x."
  }
}

# ---- RabbitMQ (Amazon MQ) -------------------------------------------------------

variable "mq_instance_type" {
  description = "Amazon MQ instance type of each of the three cluster nodes (a cluster needs mq.m5.large or larger)."
  type        = string
  default     = "mq.m5.large"

  validation {
    condition     = can(regex("^mq\\.m[5-9]", var.mq_instance_type))
    error_message = "mq_instance_type must be an mq.m5 (or newer) type: clusters do not run on mq.t3."
  }
}

variable "mq_engine_version" {
  description = "RabbitMQ engine version: 3.13 or later, the first with quorum queues on Amazon MQ."
  type        = string
  default     = "3.13"

  validation {
    condition = (
      tonumber(split(".", var.mq_engine_version)[0]) > 3 ||
      (tonumber(split(".", var.mq_engine_version)[0]) == 3 && tonumber(split(".", var.mq_engine_version)[1]) >= 13)
    )
    error_message = "mq_engine_version must be 3.13 or later (quorum queues)."
  }
}

variable "mq_admin_username" {
  description = "The broker's one administrator (Amazon MQ takes a single user through the API); the application users are made with it after apply (deploy/README.md)."
  type        = string
  default     = "orders_admin"
}

variable "work_queues" {
  description = "The RabbitMQ work queues the daemons declare; each has a <queue>.dlq. Depth, consumer and dead-letter alarms are made for each."
  type        = list(string)
  default     = ["inventory.reserve", "payment.authorize", "order.finalize", "cart.persist"]
}

# ---- edge: certificate, WAF, load balancer ------------------------------------------

variable "api_domain_name" {
  description = "Public host name of the API (the ACM certificate's name and the Ingress host)."
  type        = string
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone that holds api_domain_name, for DNS validation of the certificate. Empty: add the validation records by hand (output acm_validation_records)."
  type        = string
  default     = ""
}

variable "api_alb_name" {
  description = "Name the AWS Load Balancer Controller gives the API's ALB (the Ingress annotation alb.ingress.kubernetes.io/load-balancer-name). Empty until the Ingress exists: the ALB alarms and the DNS record are made on the next apply."
  type        = string
  default     = ""

  validation {
    condition     = var.api_alb_name == "" || can(regex("^[a-zA-Z0-9-]{1,32}$", var.api_alb_name))
    error_message = "api_alb_name must be at most 32 letters, digits or dashes (an ALB name)."
  }
}

variable "waf_rate_limit_per_ip" {
  description = "Requests one client IP may send in 5 minutes before the WAF blocks it (the API's own per-key limit works behind it)."
  type        = number
  default     = 6000

  validation {
    condition     = var.waf_rate_limit_per_ip >= 100
    error_message = "waf_rate_limit_per_ip must be at least 100."
  }
}

# ---- alarms and logs -----------------------------------------------------------

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm); wire the topic to the paging tool as well."
  type        = list(string)
  default     = []
}

variable "queue_depth_alarm_threshold" {
  description = "Messages (ready and unacknowledged) in one work queue that raise the queue-depth alarm when held for 15 minutes."
  type        = number
  default     = 20000
}

variable "http_5xx_alarm_percent" {
  description = "Share of ALB requests answered 5xx (by the targets or the ALB), in percent over 5 minutes, that raises the alarm."
  type        = number
  default     = 5
}

variable "latency_p99_alarm_seconds" {
  description = "ALB target response time p99, in seconds, that raises the latency alarm when held for 10 minutes."
  type        = number
  default     = 1
}

variable "db_connections_alarm" {
  description = "Connections to the primary that raise the database-connections alarm (keep it below max_connections of the instance class)."
  type        = number
  default     = 1500
}

variable "runbook_url" {
  description = "Where the runbook (deploy/README.md) is read; alarm descriptions link its sections as <runbook_url>#<section>, like the Prometheus alerts' runbook_url."
  type        = string
  default     = "deploy/README.md"
}

variable "cloudwatch_log_retention_days" {
  description = "Retention of the CloudWatch log groups (EKS control plane, flow logs, WAF, Redis, RDS); the S3 logs bucket keeps logs longer."
  type        = number
  default     = 90

  validation {
    condition     = contains([90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cloudwatch_log_retention_days)
    error_message = "cloudwatch_log_retention_days must be a CloudWatch retention value of at least 90 days (PCI-DSS 10.5.1: three months at hand)."
  }
}

variable "logs_expiration_days" {
  description = "Days the logs bucket keeps an object before it expires (PCI-DSS 10.5.1 asks for twelve months)."
  type        = number
  default     = 400

  validation {
    condition     = var.logs_expiration_days >= 365
    error_message = "logs_expiration_days must be at least 365."
  }
}

variable "backups_expiration_days" {
  description = "Days the backups bucket keeps an object (database exports, broker definitions) before it expires."
  type        = number
  default     = 400

  validation {
    condition     = var.backups_expiration_days >= 35
    error_message = "backups_expiration_days must be at least 35."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a deleted KMS key is gone for good (a key scheduled by mistake can be restored within it)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be from 7 to 30."
  }
}
