# versions.tf: the Terraform and provider versions this configuration is
# written for, the remote state, and the AWS provider with the tags every
# resource carries.

terraform {
  # 1.9: validations that refer to other variables; 1.10: S3 state locking.
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }

  # Partial configuration: the bucket, key, region and lock table come from
  # environments/<env>.backend.hcl (terraform init -backend-config=...), so
  # that one set of files serves every environment. The state holds the
  # generated Redis and RabbitMQ passwords: its bucket is SSE-KMS encrypted
  # and readable by the deployers' role only (see deploy/README.md).
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
