output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "The private subnets, one per availability zone."
  value       = aws_subnet.private[*].id
}

output "workloads_security_group_id" {
  description = "Attach to the gateway's and agents' nodes or pods: out only to the egress proxy and the endpoints."
  value       = aws_security_group.workloads.id
}

output "egress_proxy_security_group_id" {
  description = "Attach to the egress proxy: HTTPS out to the allowlisted destinations."
  value       = aws_security_group.egress_proxy.id
}
