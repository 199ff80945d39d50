# Plan-mode unit tests with a mock AWS provider: no credentials, no API calls.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  bucket_name = "unit-models"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "private_versioned_encrypted" {
  command = plan

  assert {
    condition = (aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.block_public_policy
    && aws_s3_bucket_public_access_block.this.ignore_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets)
    error_message = "All four public access blocks are on."
  }
  assert {
    condition     = aws_s3_bucket_versioning.this.versioning_configuration[0].status == "Enabled"
    error_message = "Versioning is on: a bad import can be rolled back."
  }
  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "aws:kms"
    error_message = "Objects are encrypted with SSE-KMS."
  }
  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this.rule) == 3 && alltrue([for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.status == "Enabled"])
    error_message = "Lifecycle: abort incomplete uploads, expire old versions, move cold models to Standard-IA."
  }
  assert {
    condition     = aws_s3_bucket.this.force_destroy == false
    error_message = "A bucket with weights is not destroyed with its contents by default."
  }
  assert {
    condition     = output.s3_uri == "s3://unit-models/models"
    error_message = "s3_uri is s3://BUCKET/PREFIX."
  }
  assert {
    condition     = length(aws_s3_bucket_logging.this) == 0
    error_message = "No access logs without a log bucket."
  }
}

run "no_transition_and_logging" {
  command = plan

  variables {
    infrequent_access_after_days = null
    access_log_bucket            = "unit-logs"
  }

  assert {
    condition     = [for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.status if r.id == "cold-models-to-infrequent-access"] == ["Disabled"]
    error_message = "infrequent_access_after_days = null disables the transition rule."
  }
  assert {
    condition     = aws_s3_bucket_logging.this[0].target_bucket == "unit-logs"
    error_message = "access_log_bucket turns on server access logging."
  }
}
