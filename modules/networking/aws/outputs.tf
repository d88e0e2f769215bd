output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "The private subnets, one per availability zone."
  value       = aws_subnet.private[*].id
}

output "workloads_security_group_id" {
  description = "Attach to the control plane and to every node (the aws module does): out only inside the group, to DNS, the endpoints and the egress proxy."
  value       = aws_security_group.workloads.id
}

output "egress_proxy_security_group_id" {
  description = "Attach to the nodes that run the egress proxy, the gateway's (the aws module does): HTTPS out to the allowlisted destinations."
  value       = aws_security_group.egress_proxy.id
}

output "flow_log_group_name" {
  description = "The log group of the VPC's flow logs."
  value       = aws_cloudwatch_log_group.flow_logs.name
}
