terraform {
  # optional() object attributes with defaults and preconditions need Terraform 1.3; 1.6.6 is
  # the oldest release the tests can install and apply it with (provider/tests/acceptance).
  required_version = ">= 1.6.6"
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}
