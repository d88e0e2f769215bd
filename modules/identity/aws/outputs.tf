output "gateway_role_arn" {
  description = "The gateway's workload role: annotate its service account with eks.amazonaws.com/role-arn = this."
  value       = aws_iam_role.gateway.arn
}

output "admin_role_arn" {
  description = "The administrators' role (MFA required), or null when no admin principals were given."
  value       = length(aws_iam_role.admin) > 0 ? aws_iam_role.admin[0].arn : null
}
