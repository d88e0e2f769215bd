//! Vendor signing keys.
//!
//! The public key is a standard SPKI PEM (`openssl pkey -pubin` reads it). The private key is a
//! PKCS#8 PEM encrypted at rest with an age passphrase (scrypt), so it is never on disk in clear
//! and the stock `age -d` can still recover it.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::LicenseError;
use crate::seal::{self, Passphrase};

/// The vendor's signing key (held by the vendor only).
pub struct VendorKey {
    signing: SigningKey,
}

impl std::fmt::Debug for VendorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VendorKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl VendorKey {
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    pub fn public(&self) -> VendorPublicKey {
        VendorPublicKey {
            verifying: self.signing.verifying_key(),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The private key as an age passphrase-encrypted, armored PKCS#8 PEM. `work_factor` is
    /// scrypt's log2(N); `None` lets age pick one that takes about a second here.
    pub fn to_encrypted(
        &self,
        passphrase: &Passphrase,
        work_factor: Option<u8>,
    ) -> Result<Vec<u8>, LicenseError> {
        let pem = self
            .signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| LicenseError::Key(format!("cannot encode the private key: {e}")))?;
        seal::encrypt_with_passphrase(pem.as_bytes(), passphrase, work_factor)
    }

    /// Reads a key written by [`VendorKey::to_encrypted`]; `what` names the file in errors.
    pub fn from_encrypted(
        bytes: &[u8],
        passphrase: &Passphrase,
        what: &str,
    ) -> Result<Self, LicenseError> {
        if !seal::is_age(bytes) {
            return Err(LicenseError::Key(format!(
                "{what} is not an encrypted MeshGuard vendor key (private keys are only kept \
                 encrypted); create one with `meshguard-license keys generate`"
            )));
        }
        let pem = seal::decrypt_with_passphrase(bytes, passphrase, what)?;
        let pem = std::str::from_utf8(&pem)
            .map_err(|_| LicenseError::Key(format!("{what} does not hold a PEM private key")))?;
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            LicenseError::Key(format!("{what} does not hold an ed25519 private key: {e}"))
        })?;
        Ok(Self { signing })
    }
}

/// The vendor's public key: what a site trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPublicKey {
    verifying: VerifyingKey,
}

impl VendorPublicKey {
    /// The first 16 hex digits of SHA-256 over the raw 32-byte key.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.verifying.as_bytes());
        hex::encode(&digest[..8])
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub fn to_pem(&self) -> String {
        self.verifying
            .to_public_key_pem(LineEnding::LF)
            .expect("an ed25519 public key always encodes")
    }

    /// Parses an SPKI PEM public key; `what` names the file in errors.
    pub fn from_pem(text: &[u8], what: &str) -> Result<Self, LicenseError> {
        let bad = |detail: String| {
            LicenseError::Key(format!(
                "{what} is not an ed25519 public key in PEM form ({detail}); use the vendor.pub \
                 file from `meshguard-license keys generate`"
            ))
        };
        let text = std::str::from_utf8(text).map_err(|_| bad("not text".into()))?;
        let verifying =
            VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| bad(e.to_string()))?;
        Ok(Self { verifying })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, LicenseError> {
        let bytes = crate::fsutil::read(path)?;
        Self::from_pem(&bytes, &path.display().to_string())
    }
}

impl VendorPublicKey {
    /// The raw 32-byte ed25519 key, as the key slot of a keyed build holds it.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// A key from its raw 32 bytes; `what` names where they came from in errors.
    pub fn from_bytes(bytes: &[u8; 32], what: &str) -> Result<Self, LicenseError> {
        VerifyingKey::from_bytes(bytes)
            .map(|verifying| Self { verifying })
            .map_err(|e| LicenseError::Key(format!("{what} is not an ed25519 public key: {e}")))
    }
}
