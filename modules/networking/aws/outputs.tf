output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "The private subnets, one per availability zone: known once their routes, the endpoints and the workloads' rules exist, so a cluster or node group in them comes after its paths."
  value       = aws_subnet.private[*].id
  depends_on = [
    aws_route_table_association.private,
    aws_vpc_endpoint.s3,
    aws_vpc_endpoint.interface,
    aws_vpc_security_group_egress_rule.workloads_to_cluster,
    aws_vpc_security_group_ingress_rule.workloads_from_cluster,
    aws_vpc_security_group_egress_rule.workloads_dns,
    aws_vpc_security_group_egress_rule.workloads_to_endpoints,
    aws_vpc_security_group_egress_rule.workloads_to_s3,
    aws_vpc_security_group_ingress_rule.endpoints_from_vpc,
  ]
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
