//! `meshguard-bundle`, the offline media tool.
//!
//! This crate will own the media layout (one `layout.rs` naming every file), and one module per
//! verb: `create` (OCI layout, SBOMs, provenance, checksums, signatures), `verify` (strict, no
//! network, trust root passed in), `pack`/`unpack` (deterministic tar + zstd volumes) and `import`
//! (registry push with resume, Terraform filesystem mirror). Nothing is implemented yet: see the
//! offline media issue.
