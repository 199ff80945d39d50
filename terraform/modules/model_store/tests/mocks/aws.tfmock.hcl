# Values the mock AWS provider returns where a random string would not do.
mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}

mock_resource "aws_s3_bucket" {
  defaults = { arn = "arn:aws:s3:::unit-models" }
}
