output "bucket" {
  description = "The archive bucket's name."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "The archive bucket's ARN."
  value       = aws_s3_bucket.this.arn
}
