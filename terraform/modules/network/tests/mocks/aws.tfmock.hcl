# Values the mock AWS provider returns where a random string would not do.
mock_data "aws_region" {
  defaults = { name = "us-east-1" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
