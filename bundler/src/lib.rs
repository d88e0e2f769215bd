//! `meshguard-bundle`, the offline media tool.
//!
//! Today this crate owns one piece the media needs and the Terraform provider's packaging uses:
//! [`tfmirror`], which lays a provider binary out in Terraform's packed filesystem-mirror layout
//! and computes its `h1:` and `zh:` hashes.
//!
//! It will own the media layout (one `layout.rs` naming every file), and one module per verb:
//! `create` (OCI layout, SBOMs, provenance, checksums, signatures), `verify` (strict, no network,
//! trust root passed in), `pack`/`unpack` (deterministic tar + zstd volumes) and `import`
//! (registry push with resume, Terraform filesystem mirror); see the offline media issue.

pub mod tfmirror;
