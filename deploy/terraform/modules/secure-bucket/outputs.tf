# outputs.tf: what the secure-bucket module gives its caller.

output "id" {
  description = "Bucket name, available once its encryption and policy are in place (so writers never race them)."
  value       = aws_s3_bucket.this.id

  depends_on = [
    aws_s3_bucket_policy.this,
    aws_s3_bucket_server_side_encryption_configuration.this,
    aws_s3_bucket_public_access_block.this,
  ]
}

output "arn" {
  description = "Bucket ARN."
  value       = aws_s3_bucket.this.arn
}

output "regional_domain_name" {
  description = "Regional domain name of the bucket."
  value       = aws_s3_bucket.this.bucket_regional_domain_name
}
