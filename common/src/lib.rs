//! What the gateway, the bundler and the licensing tools share, so each exists once: durable
//! file writes ([`fsx`]), canonical JSON ([`canonical`]) and the minisign signature format over any ed25519 signer, a key
//! file or a PKCS#11 token ([`minisig`]), and the ePHI patterns the gateway redacts and the
//! evidence verifier scans for ([`ephi`]).

pub mod canonical;
pub mod decimal;
pub mod ephi;
pub mod fsx;
pub mod minisig;
