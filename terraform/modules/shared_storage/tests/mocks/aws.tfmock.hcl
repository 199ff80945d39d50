# Values the mock AWS provider returns where a random string would not do.
mock_resource "aws_fsx_lustre_file_system" {
  defaults = {
    id         = "fs-0123456789abcdef0"
    dns_name   = "fs-0123456789abcdef0.fsx.us-east-1.amazonaws.com"
    mount_name = "abcdefgh"
  }
}
