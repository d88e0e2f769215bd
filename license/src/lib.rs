//! Offline licensing for MeshGuard.
//!
//! This crate will own the license document and its canonical serialization, ed25519 signing and
//! verification (a `VerifiedLicense` built with `now` passed in), activation requests bound to an
//! installation id, renewals with a growing sequence number, and age encryption of every file that
//! crosses the air gap. Nothing is implemented yet: see the offline licensing issue.
