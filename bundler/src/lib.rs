//! `meshguard-bundle`: signed offline media for disconnected sites.
//!
//! One module per verb — [`create`], [`verify`], [`pack`] (and unpack), [`import`] — over the
//! layout in [`media`]: one shared OCI layout ([`oci`]), a Terraform mirror ([`tfmirror`]),
//! CycloneDX SBOMs ([`sbom`]), in-toto provenance ([`provenance`]), `SHA256SUMS` ([`sums`])
//! signed in the minisign format and optionally as a sigstore bundle ([`keys`], [`sigstore`]).
//! The chain of trust a site checks, with no network: public key → signature over
//! `SHA256SUMS` → every file → `MEDIA.json` → every OCI digest.

pub mod access;
pub mod archive;
pub mod audit_archive;
pub mod backup;
pub mod create;
mod error;
pub mod evidence;
pub mod fsx;
pub mod gateway_build;
pub mod image;
pub mod import;
pub mod keys;
pub mod manifest;
pub mod media;
pub mod oci;
pub mod pack;
pub mod progress;
pub mod provenance;
pub mod registry;
pub mod sbom;
pub mod sigstore;
pub mod site;
pub mod sums;
pub mod tfmirror;
pub mod verify;
pub mod witness;

pub use error::BundleError;
