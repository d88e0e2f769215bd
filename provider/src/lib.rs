//! `terraform-provider-meshguard`, the Terraform provider for a MeshGuard gateway.
//!
//! This crate will own the tfplugin6 server (through the `tf-provider` crate), the
//! `meshguard_agent`, `meshguard_policy` and `meshguard_alert_channel` resources, the
//! `meshguard_agents` and `meshguard_policies` data sources, and the HTTP client that talks to the
//! gateway's admin API using the wire types of [`meshguard_api`]. Nothing is implemented yet: see
//! the Terraform provider issue.
