# Values the mock AWS provider returns where a random string would not do.
mock_data "aws_ami" {
  defaults = { id = "ami-0123456789abcdef0" }
}

mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
