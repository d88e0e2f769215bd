//! Media signing keys: ed25519 in the minisign format (the stock `minisign` reads both files and
//! checks the signatures), and ECDSA P-256 as cosign uses it (PKIX PEM public key; the private
//! key as an encrypted PKCS#8 PEM that `openssl pkey` opens with the passphrase).
//!
//! Private keys are only ever written encrypted. Passphrases come from the environment
//! (`MESHGUARD_BUNDLE_PASSPHRASE`) or a file, never from a command-line flag value.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::BundleError;

/// The minisign secret key layout after decryption: algorithm (2), KDF (2), checksum
/// algorithm (2), salt (32), opslimit (8), memlimit (8), key id (8), ed25519 keypair (64).
const SK_KEYPAIR_OFFSET: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8;

/// Key passphrases: one type for the workspace, held as a secret and zeroed on drop.
pub use meshguard_license::seal::Passphrase;

/// The media signing key (ed25519, minisign format).
pub struct MediaKey {
    pk: minisign::PublicKey,
    signing: SigningKey,
}

impl std::fmt::Debug for MediaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl MediaKey {
    /// A new key pair: (encrypted secret key file, public key file), both minisign text.
    pub fn generate(passphrase: &Passphrase) -> Result<(String, String), BundleError> {
        let kp =
            minisign::KeyPair::generate_encrypted_keypair(Some(passphrase.expose().to_owned()))
                .map_err(|e| BundleError::Key(format!("cannot generate a minisign key: {e}")))?;
        let sk = kp
            .sk
            .to_box(Some("meshguard-bundle media signing key (encrypted)"))
            .map_err(|e| BundleError::Key(e.to_string()))?
            .into_string();
        let pk = kp
            .pk
            .to_box()
            .map_err(|e| BundleError::Key(e.to_string()))?
            .into_string();
        Ok((sk, pk))
    }

    /// Reads and decrypts a minisign secret key file.
    pub fn load(path: &Path, passphrase: &Passphrase) -> Result<Self, BundleError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io("read", path, e))?;
        let boxed = minisign::SecretKeyBox::from_string(&text)
            .map_err(|e| BundleError::Key(format!("{what} is not a minisign secret key: {e}")))?;
        let sk = boxed
            .into_secret_key(Some(passphrase.expose().to_owned()))
            .map_err(|_| BundleError::Key(format!("wrong passphrase for {what}")))?;
        if sk.is_encrypted() {
            return Err(BundleError::Key(format!("wrong passphrase for {what}")));
        }
        let pk = minisign::PublicKey::from_secret_key(&sk)
            .map_err(|e| BundleError::Key(format!("{what}: {e}")))?;
        let bytes = sk.to_bytes();
        let seed: [u8; 32] = bytes
            .get(SK_KEYPAIR_OFFSET..SK_KEYPAIR_OFFSET + 32)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| BundleError::Key(format!("{what}: truncated secret key")))?;
        Ok(Self {
            pk,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> MediaPublicKey {
        MediaPublicKey::from_minisign(&self.pk.to_base64(), "the media key")
            .expect("a key's own public half always parses")
    }

    /// A `.minisig` over `data`: prehashed (`ED`, BLAKE2b-512), as minisign 0.11 signs and
    /// verifies. Written here rather than with `minisign::sign` because that one adds random
    /// noise to each signature, and media must be reproducible: RFC 8032 signatures are
    /// deterministic, so the same input and key give the same bytes.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, BundleError> {
        meshguard_common::minisig::sign(
            self,
            data,
            trusted_comment,
            &format!(
                "signature from meshguard-bundle key {}",
                self.public().key_id()
            ),
        )
        .map_err(BundleError::Key)
    }

    /// The raw ed25519 key, for DSSE envelopes.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl meshguard_common::minisig::Signer for MediaKey {
    fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], String> {
        use ed25519_dalek::Signer as _;
        Ok(self.signing.sign(message).to_bytes())
    }
    fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }
    fn key_id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id.copy_from_slice(self.pk.keynum());
        id
    }
}

/// The media public key (minisign format), what a site trusts.
#[derive(Debug, Clone)]
pub struct MediaPublicKey {
    verify: minisign_verify::PublicKey,
    keynum: [u8; 8],
    ed: VerifyingKey,
}

impl MediaPublicKey {
    fn from_minisign(text: &str, what: &str) -> Result<Self, BundleError> {
        let bad = |d: &str| {
            BundleError::Key(format!(
                "{what} is not a minisign public key ({d}); use the .pub file from \
                 `meshguard-bundle keys generate`"
            ))
        };
        let line = text
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| bad("empty"))?;
        let raw = B64.decode(line).map_err(|_| bad("not base64"))?;
        if raw.len() != 42 || &raw[..2] != b"Ed" {
            return Err(bad("not an Ed key"));
        }
        let verify =
            minisign_verify::PublicKey::from_base64(line).map_err(|e| bad(&e.to_string()))?;
        let keynum: [u8; 8] = raw[2..10].try_into().expect("length checked");
        let ed_bytes: [u8; 32] = raw[10..42].try_into().expect("length checked");
        let ed = VerifyingKey::from_bytes(&ed_bytes).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { verify, keynum, ed })
    }

    pub fn from_file(path: &Path) -> Result<Self, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io("read", path, e))?;
        Self::from_minisign(&text, &path.display().to_string())
    }

    /// From the text of a `.pub` file; `what` names it in errors.
    pub fn from_text(text: &str, what: &str) -> Result<Self, BundleError> {
        Self::from_minisign(text, what)
    }

    /// The key id as minisign prints it (16 upper-case hex digits).
    pub fn key_id(&self) -> String {
        let mut id = self.keynum;
        id.reverse();
        hex::encode_upper(id)
    }

    pub fn ed25519(&self) -> &VerifyingKey {
        &self.ed
    }

    /// Checks a `.minisig` over `data`; returns its trusted comment. `what` names the file.
    pub fn verify(&self, data: &[u8], minisig: &str, what: &str) -> Result<String, BundleError> {
        let sig = minisign_verify::Signature::decode(minisig).map_err(|e| {
            BundleError::Signature(format!("{what}.minisig is not a minisign signature: {e}"))
        })?;
        let sig_keynum = sig_keynum(minisig).unwrap_or_default();
        if sig_keynum != self.keynum {
            let mut shown = sig_keynum;
            shown.reverse();
            return Err(BundleError::Signature(format!(
                "{what} is signed by key {}, not by the trusted key {}; check that --pubkey is \
                 the key this media's publisher gave you",
                hex::encode_upper(shown),
                self.key_id()
            )));
        }
        self.verify.verify(data, &sig, false).map_err(|e| {
            BundleError::Signature(format!(
                "{what} does not match its signature ({e}): it was changed after signing, or \
                 the signature belongs to another file; do not use this media"
            ))
        })?;
        Ok(sig.trusted_comment().to_owned())
    }
}

fn sig_keynum(minisig: &str) -> Option<[u8; 8]> {
    let line = minisig.lines().nth(1)?;
    let raw = B64.decode(line.trim()).ok()?;
    raw.get(2..10)?.try_into().ok()
}

/// An ECDSA P-256 key as cosign uses it.
pub struct CosignKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for CosignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CosignKey(..)")
    }
}

impl CosignKey {
    /// A new key pair: (encrypted PKCS#8 PEM, PKIX public PEM).
    pub fn generate(passphrase: &Passphrase) -> Result<(String, String), BundleError> {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_encrypted_pem(
                &mut rand::rngs::OsRng,
                passphrase.expose().as_bytes(),
                LineEnding::LF,
            )
            .map_err(|e| BundleError::Key(format!("cannot encrypt the P-256 key: {e}")))?;
        let public = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| BundleError::Key(e.to_string()))?;
        Ok((pem.to_string(), public))
    }

    pub fn load(path: &Path, passphrase: &Passphrase) -> Result<Self, BundleError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io("read", path, e))?;
        let secret =
            p256::SecretKey::from_pkcs8_encrypted_pem(&text, passphrase.expose().as_bytes())
                .map_err(|e| {
                    BundleError::Key(format!(
                        "cannot open {what} as an encrypted P-256 PKCS#8 key (wrong passphrase, or \
                     another kind of key): {e}"
                    ))
                })?;
        Ok(Self {
            key: p256::ecdsa::SigningKey::from(secret),
        })
    }

    /// DER-encoded ECDSA signature over SHA-256 of `data`.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::DerSignature = self.key.sign(data);
        sig.as_bytes().to_vec()
    }

    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key always encodes")
    }

    /// The SPKI DER of the public key.
    pub fn public_der(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_public_key_der()
            .expect("a P-256 key always encodes")
            .into_vec()
    }
}
