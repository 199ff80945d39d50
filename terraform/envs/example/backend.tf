# State lives in S3 with a lock; the bucket and key are given at init time, never committed:
#   terraform init -backend-config=bucket=MY-STATE-BUCKET -backend-config=key=llmfleet/example.tfstate \
#                  -backend-config=region=us-east-1 -backend-config=use_lockfile=true
# Offline checks run `terraform init -backend=false` and never touch it.
terraform {
  backend "s3" {}
}
