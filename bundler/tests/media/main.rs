//! `meshguard-bundle` end to end with the real peers: a registry, skopeo, umoci,
//! oci-image-tool, sha256sum, minisign, openssl, the sigstore JS verifier, the CycloneDX
//! validator, zstd and tar, helm, Terraform, age.

mod support;

mod archives;
mod control_plane;
mod create_verify;
mod features;
mod keyed;
mod netpol;
mod pods;
mod product;
mod registry;
mod registry_auth;
mod tampering;
