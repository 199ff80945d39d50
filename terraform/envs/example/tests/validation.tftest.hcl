# One negative run per validation block of the environment's variables.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name           = "unit"
  aws_account_id = "123456789012"
  region         = "us-east-1"
  azs            = ["us-east-1a"]
  admin_cidrs    = ["192.0.2.0/24"]
  node_pools     = { l4 = { instance_type = "g6.xlarge", nodes = 1 } }
}

run "rejects_bad_name" {
  command = plan
  variables { name = "Example" }
  expect_failures = [var.name]
}

run "rejects_bad_account_id" {
  command = plan
  variables { aws_account_id = "1234" }
  expect_failures = [var.aws_account_id]
}

run "rejects_bad_region" {
  command = plan
  variables { region = "virginia" }
  expect_failures = [var.region]
}

run "rejects_azs_of_another_region" {
  command = plan
  variables { azs = ["eu-west-1a"] }
  expect_failures = [var.azs]
}

run "rejects_world_ssh" {
  command = plan
  variables { admin_cidrs = ["0.0.0.0/0"] }
  expect_failures = [var.admin_cidrs]
}

run "rejects_empty_or_badly_named_pools" {
  command = plan
  variables { node_pools = { "H100-pool" = { instance_type = "p5.48xlarge", nodes = 1 } } }
  expect_failures = [var.node_pools]
}

# An instance type outside catalog/gpus.yml is refused by the gpu_node_pool module's own validation;
# `terraform test` cannot expect failures inside a module, so tests/test_terraform.py checks that on a real plan.
