terraform {
  required_version = ">= 1.0.3"
  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.0 gave every resource its own region argument, which region pinning uses.
      version = ">= 6.0, < 7.0"
    }
  }
}
