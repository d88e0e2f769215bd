terraform {
  required_providers {
    meshguard = {
      source = "registry.terraform.io/meshguard/meshguard"
    }
  }
}

# gateway_url and admin_token may come from MESHGUARD_GATEWAY_URL and MESHGUARD_ADMIN_TOKEN.
provider "meshguard" {
  gateway_url     = "https://gw.internal.example"
  admin_token     = var.meshguard_admin_token
  ca_cert_file    = "/etc/pki/meshguard-ca.pem" # a gateway behind a private CA
  request_timeout = 30                          # seconds per request
  max_retries     = 4                           # on connection errors, 429 and 5xx
}

variable "meshguard_admin_token" {
  type      = string
  sensitive = true
}
