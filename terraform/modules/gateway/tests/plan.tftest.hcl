# Plan-mode unit tests with a mock AWS provider: no credentials, no API calls.
mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "unit"
  subnet_ids         = ["subnet-a", "subnet-b"]
  security_group_ids = ["sg-gateway"]
  kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/mock"
}

run "private_hardened_gateway" {
  command = plan

  assert {
    condition     = length(aws_instance.gateway) == 1 && aws_instance.gateway[0].tags["Name"] == "unit-gw-0" && aws_instance.gateway[0].tags["llmfleet:role"] == "gateway"
    error_message = "One gateway named NAME-gw-0 with the role tag the inventory reads."
  }
  assert {
    condition     = aws_instance.gateway[0].metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 is required."
  }
  assert {
    condition     = aws_instance.gateway[0].root_block_device[0].encrypted && aws_instance.gateway[0].root_block_device[0].kms_key_id == var.kms_key_arn
    error_message = "The root volume is encrypted with the given KMS key."
  }
  assert {
    condition     = aws_instance.gateway[0].associate_public_ip_address == false && length(aws_eip.gateway) == 0
    error_message = "A private gateway has no public address."
  }
  assert {
    condition     = aws_instance.gateway[0].ami == "ami-0123456789abcdef0"
    error_message = "Without ami_id the Debian 12 AMI is looked up."
  }
}

run "public_pair" {
  command = plan

  variables {
    instance_count = 2
    public_ip      = true
    ami_id         = "ami-0fedcba9876543210"
  }

  assert {
    condition     = length(aws_eip.gateway) == 2 && aws_instance.gateway[1].subnet_id == "subnet-b"
    error_message = "Two public gateways get an Elastic IP each and are spread over the subnets."
  }
  assert {
    condition     = length(data.aws_ami.debian) == 0
    error_message = "An explicit ami_id skips the lookup."
  }
}
