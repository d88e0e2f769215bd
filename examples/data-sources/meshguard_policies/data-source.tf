data "meshguard_policies" "all" {}

output "policy_names" {
  value = [for p in data.meshguard_policies.all.policies : p.name]
}
