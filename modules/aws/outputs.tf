output "cluster_name" {
  description = "The EKS cluster: aws eks update-kubeconfig --name this --region REGION (from inside the VPC)."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The private Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "vpc_id" {
  description = "The VPC's id."
  value       = module.networking.vpc_id
}

output "kms_key_arn" {
  description = "The customer-managed key."
  value       = module.kms.key_arn
}

output "archive_bucket" {
  description = "The WORM audit archive bucket."
  value       = module.archive.bucket
}

output "log_group_name" {
  description = "Where the gateway ships its audit and alert stream."
  value       = module.siem.log_group_name
}

output "gateway_role_arn" {
  description = "The gateway's workload role: the chart's serviceAccount annotation eks.amazonaws.com/role-arn."
  value       = module.identity.gateway_role_arn
}

output "admin_role_arn" {
  description = "The administrators' role, or null."
  value       = module.identity.admin_role_arn
}

output "namespace" {
  description = "The namespace to install the chart in (helm --namespace): the one the gateway's role trusts."
  value       = var.namespace
}

output "storage_class_manifest" {
  description = "The StorageClass the gateways' volumes are made with (EBS gp3 through the EBS CSI driver, encrypted with the customer-managed key, kept when released): apply it before the chart (terraform output -raw storage_class_manifest | kubectl apply -f -)."
  value = yamlencode({
    apiVersion           = "storage.k8s.io/v1"
    kind                 = "StorageClass"
    metadata             = { name = local.storage_class }
    provisioner          = "ebs.csi.aws.com"
    volumeBindingMode    = "WaitForFirstConsumer"
    reclaimPolicy        = "Retain"
    allowVolumeExpansion = true
    parameters           = { type = "gp3", encrypted = "true", kmsKeyId = module.kms.key_arn }
  })
}

output "helm_values" {
  description = "The chart's values this install fixes (helm --values): the service account and its role annotation, the egress proxy's port, the region, the allowlisted destinations the NetworkPolicy lets the gateway reach, and the gateway group's node selector and toleration, and the storage class of storage_class_manifest."
  value = {
    serviceAccount = {
      name        = var.service_account
      annotations = { "eks.amazonaws.com/role-arn" = module.identity.gateway_role_arn }
    }
    egressProxy   = { port = var.egress_proxy_port, regions = [var.region] }
    license       = { region = var.region }
    networkPolicy = { egressTo = [for c in var.egress_cidrs : { ipBlock = { cidr = c } }] }
    nodeSelector  = local.gateway_node_label
    persistence   = { storageClassName = local.storage_class }
    tolerations   = [{ key = "meshguard.io/role", operator = "Equal", value = "gateway", effect = "NoSchedule" }]
  }
}
