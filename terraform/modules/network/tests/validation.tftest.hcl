# One negative run per validation block: the bad value must be rejected at plan time.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name        = "unit"
  azs         = ["us-east-1a"]
  admin_cidrs = ["192.0.2.0/24"]
  kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "rejects_bad_name" {
  command = plan
  variables { name = "Bad_Name" }
  expect_failures = [var.name]
}

run "rejects_small_vpc" {
  command = plan
  variables { vpc_cidr = "10.0.0.0/24" }
  expect_failures = [var.vpc_cidr]
}

run "rejects_duplicate_azs" {
  command = plan
  variables { azs = ["us-east-1a", "us-east-1a"] }
  expect_failures = [var.azs]
}

run "rejects_bad_retention" {
  command = plan
  variables { flow_log_retention_days = 10 }
  expect_failures = [var.flow_log_retention_days]
}

run "rejects_non_kms_arn" {
  command = plan
  variables { kms_key_arn = "alias/aws/logs" }
  expect_failures = [var.kms_key_arn]
}

run "rejects_world_ssh" {
  command = plan
  variables { admin_cidrs = ["0.0.0.0/0"] }
  expect_failures = [var.admin_cidrs]
}

run "rejects_bad_vllm_ports" {
  command = plan
  variables { vllm_port_range = { from = 9000, to = 8000 } }
  expect_failures = [var.vllm_port_range]
}

run "rejects_bad_listener_port" {
  command = plan
  variables { gateway_listener_port = 70000 }
  expect_failures = [var.gateway_listener_port]
}

run "rejects_world_client_cidr" {
  command = plan
  variables { gateway_client_cidrs = ["0.0.0.0/0"] }
  expect_failures = [var.gateway_client_cidrs]
}
