//! A sigstore bundle v0.3 with a `messageSignature` made by a plain ECDSA P-256 key: what
//! `cosign verify-blob --key K --bundle B` checks offline.
//!
//! Written with serde_json rather than the `sigstore` crate: for a keyed, offline signature the
//! bundle is a dozen fields, while the crate's narrowest signing feature set brings Fulcio,
//! Rekor and OAuth clients (see docs/adr/0003). The tests check every bundle with the sigstore
//! project's own JavaScript verifier and the signature with `openssl dgst -verify`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::fsx;
use crate::keys::CosignKey;

pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// The key hint: hex SHA-256 of the public key's SPKI DER.
pub fn hint(key: &CosignKey) -> String {
    fsx::sha256_hex(&key.public_der())
}

pub fn bundle(key: &CosignKey, artifact: &[u8]) -> Value {
    let digest = sha256(artifact);
    json!({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hint(key)},
            "tlogEntries": [],
            "timestampVerificationData": {"rfc3161Timestamps": []},
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
            "signature": B64.encode(key.sign(artifact)),
        },
    })
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

/// Checks a bundle made by [`bundle`] against `artifact` and a PKIX PEM public key.
pub fn verify(
    bundle: &Value,
    artifact: &[u8],
    public_pem: &str,
    what: &str,
) -> Result<(), crate::BundleError> {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let fail = |why: &str| crate::BundleError::Signature(format!("{what}: {why}"));
    if bundle["mediaType"] != MEDIA_TYPE {
        return Err(fail("not a sigstore bundle v0.3"));
    }
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem)
        .map_err(|e| fail(&format!("the P-256 public key does not parse: {e}")))?;
    let digest = B64
        .decode(
            bundle["messageSignature"]["messageDigest"]["digest"]
                .as_str()
                .unwrap_or_default(),
        )
        .map_err(|_| fail("message digest is not base64"))?;
    if digest != sha256(artifact) {
        return Err(fail(
            "the bundle's message digest is not the SHA-256 of the file",
        ));
    }
    let sig = B64
        .decode(
            bundle["messageSignature"]["signature"]
                .as_str()
                .unwrap_or_default(),
        )
        .map_err(|_| fail("signature is not base64"))?;
    let sig =
        p256::ecdsa::DerSignature::from_bytes(&sig).map_err(|_| fail("signature is not DER"))?;
    key.verify(artifact, &sig)
        .map_err(|_| fail("the ECDSA P-256 signature does not verify with the given key"))
}
