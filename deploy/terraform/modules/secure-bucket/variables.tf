# variables.tf: the inputs of the secure-bucket module.

variable "name" {
  description = "Globally unique bucket name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid S3 bucket name (3-63 lower-case letters, digits, dots, dashes)."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key every object is encrypted with (SSE-KMS)."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "infrequent_access_after_days" {
  description = "Days after which objects move to STANDARD_IA (at least 30)."
  type        = number
  default     = 30

  validation {
    condition     = var.infrequent_access_after_days >= 30
    error_message = "infrequent_access_after_days must be at least 30 (the STANDARD_IA minimum)."
  }
}

variable "archive_after_days" {
  description = "Days after which objects move to archive_storage_class."
  type        = number
  default     = 90

  validation {
    condition     = var.archive_after_days > var.infrequent_access_after_days
    error_message = "archive_after_days must come after infrequent_access_after_days."
  }
}

variable "archive_storage_class" {
  description = "Archive storage class: GLACIER_IR (restored in milliseconds) or GLACIER (hours)."
  type        = string
  default     = "GLACIER_IR"

  validation {
    condition     = contains(["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"], var.archive_storage_class)
    error_message = "archive_storage_class must be GLACIER_IR, GLACIER or DEEP_ARCHIVE."
  }
}

variable "expiration_days" {
  description = "Days after which current objects expire (become noncurrent versions)."
  type        = number

  validation {
    condition     = var.expiration_days > var.archive_after_days
    error_message = "expiration_days must come after archive_after_days."
  }
}

variable "noncurrent_expiration_days" {
  description = "Days a noncurrent (overwritten or expired) version is kept before it is deleted for good."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Bucket that receives this bucket's server access logs (under s3-access/<name>/); null for none."
  type        = string
  default     = null
}

variable "policy_documents" {
  description = "Extra bucket policy documents (JSON) merged with the TLS-only statements, e.g. grants to log delivery services."
  type        = list(string)
  default     = []
}
