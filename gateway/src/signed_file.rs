//! Files the site hands the gateway signed with minisign (the egress allowlist, the change
//! approver list): read together with `FILE.minisig` and accepted only if the signature is by
//! the key given, so an edited or unsigned file is refused, not trusted. [`check`] is the one
//! minisign verification in the gateway (the policy bundle's too).

use std::path::Path;
use std::time::SystemTime;

/// A verified file: its bytes, their SHA-256 (hex) and its modification time.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) bytes: Vec<u8>,
    pub(crate) sha256: String,
    pub(crate) modified: Option<SystemTime>,
}

/// Why a minisign signature was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The public key text is not a minisign key.
    Key,
    /// The signature file is not a minisign signature, with why.
    Malformed(String),
    /// The signature is by another key (its key id is not the key's), with why.
    OtherKey(String),
    /// The signature does not verify over these bytes: altered, or signed with another key.
    Altered,
}

/// Checks the minisign signature `sig_text` over `bytes` with the public key `pk_text` (the
/// `minisign -G` file, or its base64 line): the one place the gateway verifies minisign.
pub(crate) fn check(bytes: &[u8], sig_text: &str, pk_text: &str) -> Result<(), Refused> {
    let pk = minisign_verify::PublicKey::decode(pk_text.trim())
        .or_else(|_| minisign_verify::PublicKey::from_base64(pk_text.trim()))
        .map_err(|_| Refused::Key)?;
    let sig = minisign_verify::Signature::decode(sig_text)
        .map_err(|e| Refused::Malformed(e.to_string()))?;
    pk.verify(bytes, &sig, false).map_err(|e| match e {
        minisign_verify::Error::InvalidSignature => Refused::Altered,
        other => Refused::OtherKey(other.to_string()),
    })
}

/// Reads `path` and `path.minisig` and checks the signature against the minisign public key in
/// `pubkey`; `what` names the file in errors ("the egress allowlist").
pub(crate) fn read(path: &Path, pubkey: &Path, what: &str) -> Result<Verified, String> {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let sig_text = std::fs::read_to_string(&sig_path).map_err(|_| {
        format!(
            "{} has no signature ({} is missing); {what} unsigned is refused",
            path.display(),
            Path::new(&sig_path).display()
        )
    })?;
    let pk_text = std::fs::read_to_string(pubkey)
        .map_err(|e| format!("cannot read the key of {what}, {}: {e}", pubkey.display()))?;
    check(&bytes, &sig_text, &pk_text).map_err(|refused| match refused {
        Refused::Key => format!("{} is not a minisign public key", pubkey.display()),
        Refused::Malformed(why) => format!("the signature of {what} is malformed: {why}"),
        Refused::Altered | Refused::OtherKey(_) => format!(
            "{} is not signed by the key in {}; refused",
            path.display(),
            pubkey.display()
        ),
    })?;
    Ok(Verified {
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        bytes,
        modified,
    })
}

#[cfg(test)]
mod tests {
    use super::{Refused, check};
    use meshguard_common::minisig;

    struct Key(ed25519_dalek::SigningKey, [u8; 8]);

    impl minisig::Signer for Key {
        fn sign_ed25519(&self, message: &[u8]) -> Result<[u8; 64], String> {
            Ok(ed25519_dalek::Signer::sign(&self.0, message).to_bytes())
        }
        fn public_key(&self) -> [u8; 32] {
            self.0.verifying_key().to_bytes()
        }
        fn key_id(&self) -> [u8; 8] {
            self.1
        }
    }

    /// Every way a signed file can be wrong gets its own refusal, for the policy bundle and the
    /// site's files alike.
    #[test]
    fn each_refusal_names_what_is_wrong() {
        let site = Key(ed25519_dalek::SigningKey::from_bytes(&[1; 32]), [1; 8]);
        let other = Key(ed25519_dalek::SigningKey::from_bytes(&[2; 32]), [2; 8]);
        let data = b"{\"version\": 1}";
        let sig = minisig::sign(&site, data, "trusted", "untrusted").unwrap();
        let pk = minisig::public_key_file(&site);
        let by_other = minisig::sign(&other, data, "trusted", "untrusted").unwrap();
        // Same key id, another key: the signature itself fails.
        let impostor = Key(ed25519_dalek::SigningKey::from_bytes(&[3; 32]), [1; 8]);
        let forged = minisig::sign(&impostor, data, "trusted", "untrusted").unwrap();
        assert!(check(data, &sig, &pk).is_ok());
        type Expect = fn(&Result<(), Refused>) -> bool;
        let cases: [(&str, &[u8], &str, &str, Expect); 5] = [
            ("altered data", b"{\"version\": 2}", &sig, &pk, |r| {
                matches!(r, Err(Refused::Altered))
            }),
            ("another key's signature", data, &by_other, &pk, |r| {
                matches!(r, Err(Refused::OtherKey(_)))
            }),
            (
                "a forged signature under the key's id",
                data,
                &forged,
                &pk,
                |r| matches!(r, Err(Refused::Altered)),
            ),
            ("not a signature", data, "not a signature", &pk, |r| {
                matches!(r, Err(Refused::Malformed(_)))
            }),
            ("not a key", data, &sig, "not a key", |r| {
                matches!(r, Err(Refused::Key))
            }),
        ];
        for (case, bytes, sig, pk, expected) in cases {
            let got = check(bytes, sig, pk);
            assert!(expected(&got), "{case}: {got:?}");
        }
    }
}
