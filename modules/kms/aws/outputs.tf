output "key_arn" {
  description = "The customer-managed key's ARN."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "The customer-managed key's id."
  value       = aws_kms_key.this.key_id
}

output "alias_name" {
  description = "The key's alias, alias/NAME."
  value       = aws_kms_alias.this.name
}
