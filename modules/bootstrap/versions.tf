terraform {
  # optional() object attributes with defaults need Terraform 1.3.
  required_version = ">= 1.3.0"
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}
