//! Alert-channel secrets sealed at rest: webhook secrets, PagerDuty routing keys and Slack
//! webhook URLs are stored as `mgsecret1:<key id>:<base64(nonce ‖ ciphertext)>`, sealed with
//! XChaCha20-Poly1305 under a 32-byte key kept in a file outside the database
//! (`SECRETS_KEY_FILE`, mode 0600), so a copy of the database alone holds no usable secret.
//!
//! A missing key file is created only while the database holds no sealed secret; otherwise the
//! start is refused, naming the key id the secrets were sealed with, because a new key would
//! silently lose them. Secrets written in clear by earlier releases are sealed on open.
//!
//! With `SECRETS_KEY_URI` the key is an AES-256 key in a PKCS#11 token that never leaves it:
//! values are `mgsecret2:<key id>:<base64(iv ‖ ciphertext ‖ tag)>`, sealed with `CKM_AES_GCM`
//! by the token, the key id taken from the key's check value. The first start with the URI
//! moves secrets sealed under the key file into the token (the file must still be there).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};

/// XChaCha20-Poly1305 under a key file.
const PREFIX: &str = "mgsecret1:";
/// AES-256-GCM in a PKCS#11 token.
const TOKEN_PREFIX: &str = "mgsecret2:";

enum Cipher {
    File(XChaCha20Poly1305),
    Token(crate::pkcs11::TokenAes),
}

pub(crate) struct SecretBox {
    cipher: Cipher,
    id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox({})", self.id)
    }
}

/// The key id a sealed value names, if it is sealed.
pub(crate) fn sealed_with(value: &str) -> Option<&str> {
    value
        .strip_prefix(PREFIX)
        .or_else(|| value.strip_prefix(TOKEN_PREFIX))?
        .split(':')
        .next()
}

impl SecretBox {
    fn from_key(key: &[u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..4]);
        Self {
            cipher: Cipher::File(XChaCha20Poly1305::new(key.into())),
            id,
        }
    }

    /// The AES key a PKCS#11 URI names (`SECRETS_KEY_URI`).
    pub(crate) fn from_token(uri: &str) -> Result<Self, String> {
        let key = crate::pkcs11::TokenAes::open(uri)?;
        let id = hex::encode(&Sha256::digest(key.check_value()?)[..4]);
        tracing::info!(key = key.name(), id = %id, "alert-channel secrets are sealed in the PKCS#11 token");
        Ok(Self {
            cipher: Cipher::Token(key),
            id,
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// `stored` sealed with this key: kept if it is, opened with `old` and sealed again if
    /// `old` sealed it, sealed if it is clear.
    pub(crate) fn reseal(&self, stored: &str, old: Option<&SecretBox>) -> Result<String, String> {
        match sealed_with(stored) {
            Some(id) if id == self.id => Ok(stored.to_owned()),
            Some(id) => match old {
                Some(o) if o.id == id => self.seal(&o.open(stored)?),
                _ => Err(format!("a secret is sealed with key {id}, not {}", self.id)),
            },
            None => self.seal(stored),
        }
    }

    /// The key given in base64 (`SECRETS_KEY`, from an orchestrator's secret, so that every
    /// gateway sharing a control plane seals with the same key without a file on its volume).
    pub(crate) fn from_value(b64: &str, sealed_ids: &[String]) -> Result<Self, String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| {
                "SECRETS_KEY is not base64; make one with: head -c 32 /dev/urandom | base64"
                    .to_owned()
            })?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "SECRETS_KEY holds {} bytes, not 32; make one with: head -c 32 /dev/urandom | base64",
                bytes.len()
            )
        })?;
        let b = Self::from_key(&key);
        if let Some(other) = sealed_ids.iter().find(|i| **i != b.id) {
            return Err(format!(
                "the database holds alert-channel secrets sealed with key {other}, but SECRETS_KEY is key {}; give the gateway the key they were sealed with",
                b.id
            ));
        }
        Ok(b)
    }

    /// Loads the key at `path`; creates it only when `sealed_ids` (the key ids the database's
    /// sealed secrets name) is empty.
    pub(crate) fn load_or_create(path: &Path, sealed_ids: &[String]) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    format!(
                        "the secrets key {} is not 32 bytes; restore it from backup",
                        path.display()
                    )
                })?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = std::fs::metadata(path)
                        .map(|m| m.permissions().mode() & 0o077)
                        .unwrap_or(0);
                    if mode != 0 {
                        return Err(format!(
                            "the secrets key {} is readable by others (mode {:o}); chmod 600 it",
                            path.display(),
                            mode
                        ));
                    }
                }
                let b = Self::from_key(&key);
                if let Some(other) = sealed_ids.iter().find(|i| **i != b.id) {
                    return Err(format!(
                        "the database holds alert-channel secrets sealed with key {other}, but {} is key {}; use the key file they were sealed with",
                        path.display(),
                        b.id
                    ));
                }
                Ok(b)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(id) = sealed_ids.first() {
                    return Err(format!(
                        "the secrets key {} is missing, and the database holds alert-channel secrets sealed with key {id}; restore that key file (a new key cannot open them)",
                        path.display()
                    ));
                }
                let key: [u8; 32] = rand::random();
                meshguard_common::fsx::write_atomic(
                    path,
                    &key,
                    meshguard_common::fsx::Mode::Private,
                )
                .map_err(|e| format!("cannot create the secrets key {}: {e}", path.display()))?;
                tracing::info!(key = %path.display(), "secrets key created for alert-channel secrets");
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(format!(
                "cannot read the secrets key {}: {e}",
                path.display()
            )),
        }
    }

    /// `clear` sealed with this key; a value already sealed is returned as is.
    pub(crate) fn seal(&self, clear: &str) -> Result<String, String> {
        if sealed_with(clear).is_some() {
            return Ok(clear.to_owned());
        }
        let (prefix, blob) = match &self.cipher {
            Cipher::File(c) => {
                let nonce: [u8; 24] = rand::random();
                let ct = c
                    .encrypt(&XNonce::from(nonce), clear.as_bytes())
                    .expect("XChaCha20-Poly1305 seals any length");
                (PREFIX, [nonce.as_slice(), &ct].concat())
            }
            Cipher::Token(t) => (TOKEN_PREFIX, t.seal(clear.as_bytes())?),
        };
        Ok(format!("{prefix}{}:{}", self.id, B64.encode(blob)))
    }

    /// The clear value; a value not sealed (written by an earlier release) is returned as is.
    pub(crate) fn open(&self, stored: &str) -> Result<String, String> {
        let Some(id) = sealed_with(stored) else {
            return Ok(stored.to_owned());
        };
        if id != self.id {
            return Err(format!("a secret is sealed with key {id}, not {}", self.id));
        }
        let (kind, rest) = stored.split_at(PREFIX.len());
        let b64 = rest
            .split_once(':')
            .ok_or("a sealed secret is malformed")?
            .1;
        let blob = B64
            .decode(b64)
            .map_err(|_| "a sealed secret is not base64")?;
        let clear = match (&self.cipher, kind) {
            (Cipher::File(c), PREFIX) => {
                if blob.len() < 24 {
                    return Err("a sealed secret is truncated".into());
                }
                let nonce: [u8; 24] = blob[..24].try_into().expect("24 bytes");
                c.decrypt(&XNonce::from(nonce), &blob[24..])
                    .map_err(|_| "a sealed secret does not open with the secrets key: altered")?
            }
            (Cipher::Token(t), TOKEN_PREFIX) => t.open_sealed(&blob)?,
            _ => return Err("a sealed secret names this key but another cipher".into()),
        };
        String::from_utf8(clear).map_err(|_| "a sealed secret is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_hide_the_clear_text() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secrets.key");
        let b = SecretBox::load_or_create(&key, &[]).unwrap();
        let sealed = b
            .seal("https://hooks.slack.com/services/T000/B000/XXXX")
            .unwrap();
        assert!(sealed.starts_with("mgsecret1:") && !sealed.contains("hooks.slack"));
        assert_eq!(
            b.open(&sealed).unwrap(),
            "https://hooks.slack.com/services/T000/B000/XXXX"
        );
        assert_eq!(b.open("clear").unwrap(), "clear");
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(b.open(&altered).is_err());
        // The key is kept: reloading gives the same id; a lost key is not silently replaced.
        let again = SecretBox::load_or_create(&key, std::slice::from_ref(&b.id)).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b.open(&sealed).unwrap());
        std::fs::remove_file(&key).unwrap();
        let err = SecretBox::load_or_create(&key, std::slice::from_ref(&b.id)).unwrap_err();
        assert!(err.contains("missing") && err.contains(&b.id), "{err}");
    }
}
