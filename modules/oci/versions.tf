terraform {
  required_version = ">= 1.0.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 6.0, < 8.0"
      # IAM policies are written in the tenancy's home region: pass it as oci.home (it may be
      # the same provider as oci when the install's region is the home region).
      configuration_aliases = [oci.home]
    }
    # The archive module fixes its retention rule's lock time with time_offset.
    time = {
      source  = "hashicorp/time"
      version = ">= 0.9, < 1.0"
    }
  }
}
