provider "aws" {
  region = var.region

  # Refuse to touch any other account than the one this environment is for.
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = {
      "llmfleet:env"        = var.name
      "llmfleet:managed-by" = "terraform"
    }
  }
}
