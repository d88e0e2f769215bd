terraform {
  required_version = ">= 1.0.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 6.0, < 8.0"
    }
    # time_offset fixes the retention rule's lock time once, at creation.
    time = {
      source  = "hashicorp/time"
      version = ">= 0.9, < 1.0"
    }
  }
}
