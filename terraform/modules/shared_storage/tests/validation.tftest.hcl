# One negative run per validation block: the bad value must be rejected at plan time.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "unit"
  subnet_ids         = ["subnet-a"]
  security_group_ids = ["sg-storage"]
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "rejects_bad_name" {
  command = plan
  variables { name = "-unit" }
  expect_failures = [var.name]
}

run "rejects_unknown_storage_type" {
  command = plan
  variables { storage_type = "s3" }
  expect_failures = [var.storage_type]
}

run "rejects_no_subnets" {
  command = plan
  variables { subnet_ids = [] }
  expect_failures = [var.subnet_ids]
}

run "rejects_no_security_groups" {
  command = plan
  variables { security_group_ids = [] }
  expect_failures = [var.security_group_ids]
}

run "rejects_non_kms_arn" {
  command = plan
  variables { kms_key_arn = "aws/fsx" }
  expect_failures = [var.kms_key_arn]
}

run "rejects_relative_mount_point" {
  command = plan
  variables { mount_point = "models" }
  expect_failures = [var.mount_point]
}

run "rejects_unknown_deployment_type" {
  command = plan
  variables { fsx_deployment_type = "SCRATCH_1" }
  expect_failures = [var.fsx_deployment_type]
}

run "rejects_odd_capacity" {
  command = plan
  variables { fsx_storage_capacity_gib = 3000 }
  expect_failures = [var.fsx_storage_capacity_gib]
}

run "rejects_throughput_of_other_generation" {
  command = plan
  variables { fsx_throughput_per_tib = 200 }
  expect_failures = [var.fsx_throughput_per_tib]
}

run "rejects_link_on_persistent_1" {
  command = plan
  variables {
    fsx_deployment_type    = "PERSISTENT_1"
    fsx_throughput_per_tib = 200
    data_repository_path   = "s3://unit-models/models"
  }
  expect_failures = [var.data_repository_path]
}

run "rejects_nested_file_system_path" {
  command = plan
  variables { data_repository_file_system_path = "/a/b" }
  expect_failures = [var.data_repository_file_system_path]
}

run "rejects_unknown_efs_mode" {
  command = plan
  variables { efs_throughput_mode = "max" }
  expect_failures = [var.efs_throughput_mode]
}

run "rejects_provisioned_without_throughput" {
  command = plan
  variables {
    storage_type        = "efs"
    efs_throughput_mode = "provisioned"
  }
  expect_failures = [var.efs_provisioned_throughput_mibps]
}
