terraform {
  required_version = ">= 1.0.3"
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}
