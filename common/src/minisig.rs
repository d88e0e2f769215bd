//! The minisign signature format (prehashed `ED`: ed25519 over BLAKE2b-512 of the data, and a
//! global signature over the signature and the trusted comment), as minisign 0.11 writes and
//! verifies it, over any ed25519 signer: a key in memory or one in a PKCS#11 token. RFC 8032
//! signatures are deterministic, so the same data and key give the same file (reproducible
//! media); `minisign -S` adds random noise instead, which is why this is not `minisign::sign`.

use base64::Engine as _;
use blake2::Digest as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An ed25519 key that signs raw messages.
pub trait Signer {
    /// The 64-byte ed25519 signature of `message`.
    fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], String>;
    /// The 32-byte public key.
    fn public_key(&self) -> [u8; 32];
    /// minisign's 8-byte key id (random in a key minisign made; the gateway derives its own
    /// from the public key).
    fn key_id(&self) -> [u8; 8];
}

/// The key id as minisign prints it (hex, most significant byte first).
pub fn key_id_text(id: [u8; 8]) -> String {
    let mut shown = id;
    shown.reverse();
    hex::encode_upper(shown)
}

/// The `.pub` file of `signer`'s key.
pub fn public_key_file(signer: &dyn Signer) -> String {
    let id = signer.key_id();
    let mut raw = b"Ed".to_vec();
    raw.extend_from_slice(&id);
    raw.extend_from_slice(&signer.public_key());
    format!(
        "untrusted comment: minisign public key {}\n{}\n",
        key_id_text(id),
        B64.encode(raw)
    )
}

/// A `.minisig` over `data`. `untrusted` is the first line's comment (not signed); `trusted`
/// is signed with the signature. Neither may hold a line break.
pub fn sign(
    signer: &dyn Signer,
    data: &[u8],
    trusted: &str,
    untrusted: &str,
) -> Result<String, String> {
    if trusted.contains(['\n', '\r']) || untrusted.contains(['\n', '\r']) {
        return Err("a minisign comment is one line".to_owned());
    }
    let prehash = blake2::Blake2b512::digest(data);
    let sig = signer.sign_ed25519(&prehash)?;
    let mut line = b"ED".to_vec();
    line.extend_from_slice(&signer.key_id());
    line.extend_from_slice(&sig);
    let mut global_input = sig.to_vec();
    global_input.extend_from_slice(trusted.as_bytes());
    let global = signer.sign_ed25519(&global_input)?;
    Ok(format!(
        "untrusted comment: {untrusted}\n{}\ntrusted comment: {trusted}\n{}\n",
        B64.encode(line),
        B64.encode(global)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    struct Key(ed25519_dalek::SigningKey);

    impl Signer for Key {
        fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], String> {
            Ok(self.0.sign(message).to_bytes())
        }
        fn public_key(&self) -> [u8; 32] {
            self.0.verifying_key().to_bytes()
        }
        fn key_id(&self) -> [u8; 8] {
            [1, 2, 3, 4, 5, 6, 7, 8]
        }
    }

    #[test]
    fn minisign_verifies_what_it_signs_and_a_comment_stays_one_line() {
        let key = Key(ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
        let sig = sign(&key, b"data", "file:x", "signature from test").unwrap();
        let pk =
            minisign_verify::PublicKey::from_base64(public_key_file(&key).lines().nth(1).unwrap())
                .unwrap();
        let s = minisign_verify::Signature::decode(&sig).unwrap();
        pk.verify(b"data", &s, false).unwrap();
        assert!(pk.verify(b"other", &s, false).is_err());
        assert_eq!(s.trusted_comment(), "file:x");
        assert!(sign(&key, b"d", "a\ntrusted comment: b", "u").is_err());
        assert_eq!(
            sign(&key, b"d", "t", "u").unwrap(),
            sign(&key, b"d", "t", "u").unwrap()
        );
    }
}
