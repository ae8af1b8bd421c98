# prod.backend.hcl: where production's Terraform state lives.
# terraform init -backend-config=environments/prod.backend.hcl
# The bucket is made once by hand (deploy/README.md): versioned, SSE-KMS,
# public access blocked, readable by the deployers' role only.
bucket       = "orders-prod-terraform-state-123456789012"
key          = "orders/prod/terraform.tfstate"
region       = "us-east-1"
encrypt      = true
kms_key_id   = "alias/orders-terraform-state"
use_lockfile = true
