output "bucket_name" {
  description = "Name of the model store bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the model store bucket."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Key prefix under which models are stored."
  value       = var.prefix
}

output "s3_uri" {
  description = "s3://BUCKET/PREFIX: the root of the stored models (and the FSx data repository path)."
  value       = "s3://${aws_s3_bucket.this.bucket}/${var.prefix}"
}
