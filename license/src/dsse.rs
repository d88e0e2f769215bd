//! DSSE (Dead Simple Signing Envelope) with ed25519 signatures.
//!
//! The signature covers `PAE(payloadType, payload)`:
//! `"DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in ASCII decimal. The payload
//! travels base64-encoded, so the exact signed bytes are what a verifier reads back. Binding
//! the payload type means an activation can never be passed off as a license.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use crate::LicenseError;
use crate::keys::{VendorKey, VendorPublicKey};

/// A DSSE envelope as JSON (`payloadType`, `payload`, `signatures[{keyid, sig}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// Pre-authentication encoding of DSSE v1.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &VendorKey) -> Self {
        Self::sign_with(
            payload_type,
            payload,
            key.signing_key(),
            key.public().key_id(),
        )
    }

    /// Signs with any ed25519 key, recorded under `keyid`.
    pub fn sign_with(
        payload_type: &str,
        payload: &[u8],
        key: &ed25519_dalek::SigningKey,
        keyid: String,
    ) -> Self {
        let sig: Signature = key.sign(&pae(payload_type, payload));
        Self {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid,
                sig: STANDARD.encode(sig.to_bytes()),
            }],
        }
    }

    /// Parses an envelope from JSON; `what` names the file in errors.
    pub fn from_json(bytes: &[u8], what: &str) -> Result<Self, LicenseError> {
        serde_json::from_slice(bytes).map_err(|e| LicenseError::Format {
            what: what.to_owned(),
            kind: "signed MeshGuard document (a DSSE envelope)",
            detail: e.to_string(),
        })
    }

    /// Pretty JSON with a trailing newline, as written to files.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("an envelope always serializes");
        out.push(b'\n');
        out
    }

    /// Checks the payload type and a signature by `key`; returns the signed payload bytes.
    ///
    /// A signature by another key is [`LicenseError::WrongKey`]; a signature by this key that
    /// does not verify is [`LicenseError::BadSignature`] (the content was changed).
    pub fn verify(
        &self,
        payload_type: &str,
        key: &VendorPublicKey,
        what: &str,
    ) -> Result<Vec<u8>, LicenseError> {
        self.verify_with(payload_type, key.verifying_key(), &key.key_id(), what)
    }

    /// [`Envelope::verify`] with any ed25519 key, known under `key_id`.
    pub fn verify_with(
        &self,
        payload_type: &str,
        key: &ed25519_dalek::VerifyingKey,
        key_id: &str,
        what: &str,
    ) -> Result<Vec<u8>, LicenseError> {
        if self.payload_type != payload_type {
            return Err(LicenseError::Format {
                what: what.to_owned(),
                kind: "document of this kind",
                detail: format!(
                    "its payload type is {:?}, expected {payload_type:?}; was the wrong file given?",
                    self.payload_type
                ),
            });
        }
        let payload =
            STANDARD
                .decode(self.payload.as_bytes())
                .map_err(|e| LicenseError::Format {
                    what: what.to_owned(),
                    kind: "signed MeshGuard document",
                    detail: format!("payload is not base64: {e}"),
                })?;
        let key_id = key_id.to_owned();
        let ours: Vec<_> = self
            .signatures
            .iter()
            .filter(|s| s.keyid.is_empty() || s.keyid == key_id)
            .collect();
        if ours.is_empty() {
            let found: Vec<_> = self.signatures.iter().map(|s| s.keyid.as_str()).collect();
            return Err(LicenseError::WrongKey {
                what: what.to_owned(),
                found: if found.is_empty() {
                    "(no signature)".to_owned()
                } else {
                    found.join(", ")
                },
                expected: key_id,
            });
        }
        let message = pae(payload_type, &payload);
        for s in ours {
            let Ok(raw) = STANDARD.decode(s.sig.as_bytes()) else {
                continue;
            };
            let Ok(sig) = Signature::from_slice(&raw) else {
                continue;
            };
            if key.verify(&message, &sig).is_ok() {
                return Ok(payload);
            }
        }
        Err(LicenseError::BadSignature {
            what: what.to_owned(),
            key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_specification_example() {
        // DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_changed_payload_or_type_or_key_is_refused() {
        let key = VendorKey::generate();
        let env = Envelope::sign("application/x-test", b"{\"a\":1}", &key);
        assert_eq!(
            env.verify("application/x-test", &key.public(), "t")
                .unwrap(),
            b"{\"a\":1}"
        );

        let mut changed = env.clone();
        changed.payload = STANDARD.encode(b"{\"a\":2}");
        let err = changed
            .verify("application/x-test", &key.public(), "t")
            .unwrap_err();
        assert_eq!(err.code(), "bad_signature", "{err}");

        let err = env
            .verify("application/x-other", &key.public(), "t")
            .unwrap_err();
        assert!(err.to_string().contains("payload type"), "{err}");

        let other = VendorKey::generate();
        let err = env
            .verify("application/x-test", &other.public(), "t")
            .unwrap_err();
        assert_eq!(err.code(), "wrong_key", "{err}");
    }
}
