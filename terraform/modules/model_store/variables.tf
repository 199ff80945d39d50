variable "bucket_name" {
  description = "Name of the S3 bucket that holds model weights (globally unique)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("\\.\\.|^\\d+\\.\\d+\\.\\d+\\.\\d+$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit."
  }
}

variable "prefix" {
  description = "Key prefix under which models are stored (MODEL/REVISION/ below it). Also the path the shared file system imports."
  type        = string
  default     = "models"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.prefix))
    error_message = "prefix must be one path segment of letters, digits, '.', '_' or '-', without slashes."
  }
}

variable "kms_key_arn" {
  description = "KMS key (ARN) for server-side encryption (SSE-KMS with an S3 bucket key)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which a replaced or deleted object version is removed. Old revisions of weights are large; keep this short."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && var.noncurrent_version_expiration_days <= 3650
    error_message = "noncurrent_version_expiration_days must be from 1 to 3650."
  }
}

variable "infrequent_access_after_days" {
  description = "Days after which current objects move to S3 Standard-IA (models not redeployed for a while). null: never."
  type        = number
  default     = 90

  validation {
    condition     = var.infrequent_access_after_days == null || try(var.infrequent_access_after_days >= 30, false)
    error_message = "infrequent_access_after_days must be null or at least 30 (S3's minimum for Standard-IA)."
  }
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs for this bucket. null: no access logs."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a bucket that still holds objects. Keep false outside throwaway environments."
  type        = bool
  default     = false
  nullable    = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
