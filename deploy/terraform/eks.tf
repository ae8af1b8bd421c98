# eks.tf: the Kubernetes cluster. Control plane API endpoint private (public
# only from named ranges when asked), Secrets encrypted with the eks key,
# every control-plane log type kept, access through EKS access entries,
# and one managed node group per zone (the cluster autoscaler then grows
# the zone that needs it, and topology spread keeps pods across zones).

resource "aws_cloudwatch_log_group" "eks" {
  # EKS writes to exactly this name; made first so that it is encrypted and
  # expires.
  name              = "/aws/eks/${local.name}/cluster"
  retention_in_days = var.cloudwatch_log_retention_days
  kms_key_id        = aws_kms_key.this["logs"].arn
}

resource "aws_eks_cluster" "main" {
  name     = local.name
  version  = var.eks_version
  role_arn = aws_iam_role.eks_cluster.arn

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = aws_subnet.app[*].id
    endpoint_private_access = true
    endpoint_public_access  = var.eks_endpoint_public_access
    public_access_cidrs     = var.eks_endpoint_public_access ? var.eks_public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.this["eks"].arn
    }
  }

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = false
  }

  lifecycle {
    precondition {
      condition     = !var.eks_endpoint_public_access || length(var.eks_public_access_cidrs) > 0
      error_message = "A public EKS endpoint needs eks_public_access_cidrs (AWS would open it to the whole internet)."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.eks_cluster,
    aws_iam_role_policy.eks_cluster_kms,
    aws_cloudwatch_log_group.eks,
  ]
}

# ---- who may use the cluster --------------------------------------------------------

resource "aws_eks_access_entry" "admins" {
  for_each = toset(var.eks_admin_role_arns)

  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "admins" {
  for_each = toset(var.eks_admin_role_arns)

  cluster_name  = aws_eks_cluster.main.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.admins]
}

# ---- nodes ----------------------------------------------------------------------

# IMDSv2 only, and one hop: pods cannot borrow the node's role and must use
# their own IRSA role. The nodes carry the cluster security group (control
# plane and node-to-node traffic) and the nodes group the data tier trusts.
resource "aws_launch_template" "node" {
  name_prefix            = "${local.name}-node-"
  update_default_version = true
  vpc_security_group_ids = [aws_eks_cluster.main.vpc_config[0].cluster_security_group_id, aws_security_group.nodes.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.node_disk_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.name}-node" })
  }
}

resource "aws_eks_node_group" "app" {
  count = var.az_count

  cluster_name    = aws_eks_cluster.main.name
  node_group_name = "${local.name}-app-${local.azs[count.index]}"
  node_role_arn   = aws_iam_role.eks_node.arn
  subnet_ids      = [aws_subnet.app[count.index].id]
  version         = var.eks_version
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  instance_types  = var.node_instance_types

  scaling_config {
    min_size     = var.node_min_per_az
    max_size     = var.node_max_per_az
    desired_size = var.node_min_per_az
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  labels = {
    "orders/pool" = "app"
  }

  lifecycle {
    # The cluster autoscaler owns the running size.
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.eks_node]
}

# ---- managed add-ons (versions follow the cluster's default) ----------------------------

resource "aws_eks_addon" "this" {
  for_each = toset(["vpc-cni", "coredns", "kube-proxy"])

  cluster_name                = aws_eks_cluster.main.name
  addon_name                  = each.key
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  # coredns needs nodes to run on.
  depends_on = [aws_eks_node_group.app]
}

# ---- the image registry -----------------------------------------------------------

# orders carries every daemon and orderctl, orders-migrate the migration
# Job (deploy/k8s). Tags are never moved, and every push is scanned.
resource "aws_ecr_repository" "images" {
  for_each = toset(["orders", "orders-migrate"])

  name                 = each.key
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this["eks"].arn
  }
}

resource "aws_ecr_lifecycle_policy" "images" {
  for_each = aws_ecr_repository.images

  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the newest 100 images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 100
      }
      action = { type = "expire" }
    }]
  })
}
