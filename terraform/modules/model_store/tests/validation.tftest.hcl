# One negative run per validation block: the bad value must be rejected at plan time.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  bucket_name = "unit-models"
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "rejects_bad_bucket_name" {
  command = plan
  variables { bucket_name = "Unit_Models" }
  expect_failures = [var.bucket_name]
}

run "rejects_prefix_with_slash" {
  command = plan
  variables { prefix = "models/llm" }
  expect_failures = [var.prefix]
}

run "rejects_non_kms_arn" {
  command = plan
  variables { kms_key_arn = "AES256" }
  expect_failures = [var.kms_key_arn]
}

run "rejects_zero_version_retention" {
  command = plan
  variables { noncurrent_version_expiration_days = 0 }
  expect_failures = [var.noncurrent_version_expiration_days]
}

run "rejects_early_infrequent_access" {
  command = plan
  variables { infrequent_access_after_days = 7 }
  expect_failures = [var.infrequent_access_after_days]
}
