//! `terraform-provider-meshguard`, the Terraform provider for a MeshGuard gateway.
//!
//! The `tf-provider` crate is the protocol layer (tfplugin6, msgpack, the plugin handshake); this
//! crate sees only its plain `Value<T>` types. One file per resource and data source holds the
//! model, the schema and the CRUD in that order, and talks to the gateway through [`client`],
//! which uses the wire types of `meshguard-api`.

mod client;
mod data_sources;
mod diag;
#[doc(hidden)]
pub mod fuzzing;
mod provider;
mod resources;

pub use provider::MeshguardProvider;
