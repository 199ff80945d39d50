# One negative run per validation block: the bad value must be rejected at plan time.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "unit"
  subnet_ids         = ["subnet-a"]
  security_group_ids = ["sg-gateway"]
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "rejects_bad_name" {
  command = plan
  variables { name = "UNIT" }
  expect_failures = [var.name]
}

run "rejects_too_many_gateways" {
  command = plan
  variables { instance_count = 5 }
  expect_failures = [var.instance_count]
}

run "rejects_gpu_instance_type" {
  command = plan
  variables { instance_type = "p5.48xlarge" }
  expect_failures = [var.instance_type]
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

run "rejects_bad_listener_port" {
  command = plan
  variables { listener_port = 0 }
  expect_failures = [var.listener_port]
}

run "rejects_bad_ami_id" {
  command = plan
  variables { ami_id = "debian-12" }
  expect_failures = [var.ami_id]
}

run "rejects_tiny_root_volume" {
  command = plan
  variables { root_volume_size_gib = 4 }
  expect_failures = [var.root_volume_size_gib]
}

run "rejects_non_kms_arn" {
  command = plan
  variables { kms_key_arn = "alias/aws/ebs" }
  expect_failures = [var.kms_key_arn]
}
