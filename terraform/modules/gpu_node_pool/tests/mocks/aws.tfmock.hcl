# Values the mock AWS provider returns where a random string would not do.
mock_data "aws_region" {
  defaults = { name = "us-east-1" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}

mock_data "aws_ami" {
  defaults = { id = "ami-0123456789abcdef0" }
}

mock_resource "aws_iam_instance_profile" {
  defaults = { arn = "arn:aws:iam::123456789012:instance-profile/mock" }
}

mock_resource "aws_launch_template" {
  defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
}

mock_data "aws_partition" {
  defaults = { partition = "aws" }
}
