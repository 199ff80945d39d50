terraform {
  # A root configuration: pinned, with .terraform.lock.hcl committed beside it.
  required_version = ">= 1.9, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
