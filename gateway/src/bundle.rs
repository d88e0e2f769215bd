//! Signed policy bundles for disconnected sidecars: export the active policy set signed in the
//! minisign format (Ed25519 over BLAKE2b-512, checkable with the stock `minisign -V`), and load a
//! bundle only if its signature verifies with the configured public key: a minisign public key
//! (signature in `<bundle>.minisig`) or a PEM ECDSA P-256 key as cosign uses (signature in
//! `<bundle>.sig`: base64 of the DER signature over SHA-256, what `cosign sign-blob` and
//! `openssl dgst -sha256 -sign` produce).
//!
//! Verification uses the `minisign-verify` crate (by minisign's author) and RustCrypto's `p256`.
//! Signing is a few lines with the gateway's Ed25519 key: two base64 lines and two comments.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::audit::note::LogKey;
use crate::policy::parse_policy;
use crate::policy_files::FilePolicy;

pub(crate) const FORMAT: &str = "meshguard-policy-bundle/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Bundle {
    pub(crate) format: String,
    /// The snapshot version it was taken from.
    pub(crate) version: u64,
    pub(crate) created_at: String,
    /// The signing gateway's audit origin.
    pub(crate) origin: String,
    pub(crate) policies: Vec<BundlePolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BundlePolicy {
    pub(crate) name: String,
    /// `sha256:<hex>` of `content`.
    pub(crate) digest: String,
    pub(crate) content: String,
}

/// A gateway key (a file or a PKCS#11 token) as a minisign signer; its key id is the first 8
/// bytes of SHA-256 of the public key.
impl meshguard_common::minisig::Signer for LogKey {
    fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], String> {
        self.sign_raw(message)
    }
    fn public_key(&self) -> [u8; 32] {
        self.public_bytes()
    }
    fn key_id(&self) -> [u8; 8] {
        let d = Sha256::digest(self.public_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        id
    }
}

/// The minisign public key file for `key`.
pub(crate) fn public_key(key: &LogKey) -> String {
    meshguard_common::minisig::public_key_file(key)
}

/// A minisign signature (prehashed `ED`) of `bytes`, with `trusted` as the trusted comment.
pub(crate) fn sign(key: &LogKey, bytes: &[u8], trusted: &str) -> Result<String, String> {
    meshguard_common::minisig::sign(
        key,
        bytes,
        trusted,
        &format!("signature from meshguard-gateway {}", key.origin()),
    )
}

/// Why a bundle was refused; each names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a minisign public key; give the .pub file the bundle's signer published"
    )]
    PublicKey { path: String },
    #[error(
        "{path}: no valid signature ({why}); the bundle was not signed, or was signed by another key"
    )]
    Signature { path: String, why: String },
    #[error(
        "{path}: the signature does not verify; the bundle was altered after signing, or signed with another key"
    )]
    Altered { path: String },
    #[error("{path}: {why}")]
    Content { path: String, why: String },
}

/// Reads `bundle` and `bundle.minisig`, verifies them with the minisign public key file
/// `pubkey`, and returns the policies as read-only file policies.
/// The bundle's version and policies, once its signature verifies with `pubkey`.
pub(crate) fn load(bundle: &Path, pubkey: &Path) -> Result<(u64, Vec<FilePolicy>), BundleError> {
    let shown = bundle.display().to_string();
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| BundleError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let bytes = read(bundle)?;
    let beside = |ext: &str| {
        let mut p = bundle.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p)
    };
    let pk_text = String::from_utf8(read(pubkey)?).unwrap_or_default();
    if pk_text
        .trim_start()
        .starts_with("-----BEGIN PUBLIC KEY-----")
    {
        verify_ecdsa(&bytes, &beside(".sig"), &pk_text, pubkey, &shown)?;
        return policies(bundle, &bytes);
    }
    let sig_path = beside(".minisig");
    let sig_text = String::from_utf8(read(&sig_path)?).unwrap_or_default();
    crate::signed_file::check(&bytes, &sig_text, &pk_text).map_err(|refused| match refused {
        crate::signed_file::Refused::Key => BundleError::PublicKey {
            path: pubkey.display().to_string(),
        },
        crate::signed_file::Refused::Malformed(why)
        | crate::signed_file::Refused::OtherKey(why) => BundleError::Signature {
            path: sig_path.display().to_string(),
            why,
        },
        crate::signed_file::Refused::Altered => BundleError::Altered {
            path: shown.clone(),
        },
    })?;
    policies(bundle, &bytes)
}

/// cosign-style: a base64 DER ECDSA P-256 signature over SHA-256 of the bundle.
fn verify_ecdsa(
    bytes: &[u8],
    sig_path: &Path,
    pem: &str,
    pubkey: &Path,
    shown: &str,
) -> Result<(), BundleError> {
    use p256::ecdsa::signature::Verifier;
    use p256::pkcs8::DecodePublicKey;
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
        BundleError::PublicKey {
            path: pubkey.display().to_string(),
        }
    })?;
    let sig_b64 = std::fs::read_to_string(sig_path).map_err(|source| BundleError::Read {
        path: sig_path.display().to_string(),
        source,
    })?;
    let der = B64
        .decode(sig_b64.trim())
        .map_err(|_| BundleError::Signature {
            path: sig_path.display().to_string(),
            why: "not base64".into(),
        })?;
    let sig = p256::ecdsa::Signature::from_der(&der).map_err(|_| BundleError::Signature {
        path: sig_path.display().to_string(),
        why: "not a DER ECDSA signature".into(),
    })?;
    key.verify(bytes, &sig).map_err(|_| BundleError::Altered {
        path: shown.to_owned(),
    })
}

/// The policies of a verified bundle, as read-only file policies.
fn policies(bundle: &Path, bytes: &[u8]) -> Result<(u64, Vec<FilePolicy>), BundleError> {
    let shown = bundle.display().to_string();
    let parsed: Bundle = serde_json::from_slice(bytes).map_err(|e| BundleError::Content {
        path: shown.clone(),
        why: format!("not a policy bundle: {e}"),
    })?;
    if parsed.format != FORMAT {
        return Err(BundleError::Content {
            path: shown,
            why: format!("format {:?}, expected {FORMAT}", parsed.format),
        });
    }
    let loaded_at = crate::clock::now_rfc3339();
    let mut out = Vec::with_capacity(parsed.policies.len());
    for p in parsed.policies {
        if crate::routes::digest(p.content.as_bytes()) != p.digest {
            return Err(BundleError::Content {
                path: shown,
                why: format!("policy {} does not match its digest", p.name),
            });
        }
        let doc = parse_policy(&p.content)
            .doc
            .ok_or_else(|| BundleError::Content {
                path: shown.clone(),
                why: format!("policy {} does not parse", p.name),
            })?;
        out.push(FilePolicy {
            id: format!("file_{}", p.name),
            name: p.name,
            path: bundle.to_owned(),
            content: p.content,
            doc: Arc::new(doc),
            loaded_at: loaded_at.clone(),
        });
    }
    Ok((parsed.version, out))
}

/// Loads the P-256 key that signs exported bundles cosign-style (PKCS#8 PEM, plain or
/// encrypted). A key that cannot be read stops the start: it is configuration, not data.
pub(crate) fn load_p256(
    path: &Path,
    passphrase: Option<&str>,
) -> anyhow::Result<p256::ecdsa::SigningKey> {
    use p256::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "POLICY_BUNDLE_SIGNING_KEY: cannot read {}: {e}",
            path.display()
        )
    })?;
    let secret = match passphrase {
        Some(p) => p256::SecretKey::from_pkcs8_encrypted_pem(&pem, p.as_bytes()),
        None => p256::SecretKey::from_pkcs8_pem(&pem),
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "POLICY_BUNDLE_SIGNING_KEY: {} is not a P-256 PKCS#8 private key{} ({e})",
            path.display(),
            if passphrase.is_some() {
                " for this passphrase"
            } else {
                "; if it is encrypted, set POLICY_BUNDLE_SIGNING_KEY_PASSPHRASE"
            }
        )
    })?;
    Ok(p256::ecdsa::SigningKey::from(secret))
}

/// A cosign-style signature: base64 of the DER ECDSA P-256 signature over SHA-256 of `bytes`.
pub(crate) fn sign_p256(key: &p256::ecdsa::SigningKey, bytes: &[u8]) -> (String, String) {
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;
    let sig: p256::ecdsa::DerSignature = key.sign(bytes);
    let public = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .expect("a P-256 public key encodes");
    (B64.encode(sig.as_bytes()), public)
}
