# One negative run per validation block: the bad value must be rejected at plan time.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "unit-pool"
  instance_type      = "g6e.xlarge"
  subnet_id          = "subnet-mock"
  security_group_ids = ["sg-mock"]
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "rejects_bad_name" {
  command = plan
  variables { name = "Pool_1" }
  expect_failures = [var.name]
}

run "rejects_instance_type_not_in_catalog" {
  command = plan
  variables { instance_type = "m5.large" }
  expect_failures = [var.instance_type]
}

run "rejects_negative_node_count" {
  command = plan
  variables { node_count = -1 }
  expect_failures = [var.node_count]
}

run "rejects_empty_security_groups" {
  command = plan
  variables { security_group_ids = [] }
  expect_failures = [var.security_group_ids]
}

run "rejects_bad_ami_id" {
  command = plan
  variables { ami_id = "ubuntu-22.04" }
  expect_failures = [var.ami_id]
}

run "rejects_tiny_root_volume" {
  command = plan
  variables { root_volume_size_gib = 8 }
  expect_failures = [var.root_volume_size_gib]
}

run "rejects_non_kms_arn" {
  command = plan
  variables { kms_key_arn = "alias/aws/ebs" }
  expect_failures = [var.kms_key_arn]
}

run "rejects_relative_staging_path" {
  command = plan
  variables { staging_path = "staging" }
  expect_failures = [var.staging_path]
}

run "rejects_unknown_placement_strategy" {
  command = plan
  variables { placement_strategy = "packed" }
  expect_failures = [var.placement_strategy]
}

run "rejects_bad_bucket_name" {
  command = plan
  variables { model_store_bucket = "Unit_Models" }
  expect_failures = [var.model_store_bucket]
}
