terraform {
  required_version = ">= 1.0.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 6.0, < 8.0"
      # IAM policies are written in the tenancy's home region.
      configuration_aliases = [oci.home]
    }
  }
}
