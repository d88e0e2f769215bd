//! Alert-channel secrets sealed at rest: webhook secrets, PagerDuty routing keys and Slack
//! webhook URLs are stored as `mgsecret1:<key id>:<base64(nonce ‖ ciphertext)>`, sealed with
//! XChaCha20-Poly1305 under a 32-byte key kept in a file outside the database
//! (`SECRETS_KEY_FILE`, mode 0600), so a copy of the database alone holds no usable secret.
//!
//! A missing key file is created only while the database holds no sealed secret; otherwise the
//! start is refused, naming the key id the secrets were sealed with, because a new key would
//! silently lose them. Secrets written in clear by earlier releases are sealed on open.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "mgsecret1:";

pub(crate) struct SecretBox {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox({})", self.id)
    }
}

/// The key id a sealed value names, if it is sealed.
pub(crate) fn sealed_with(value: &str) -> Option<&str> {
    value.strip_prefix(PREFIX)?.split(':').next()
}

impl SecretBox {
    fn from_key(key: &[u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..4]);
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            id,
        }
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

    pub(crate) fn seal(&self, clear: &str) -> String {
        if clear.starts_with(PREFIX) {
            return clear.to_owned();
        }
        let nonce: [u8; 24] = rand::random();
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), clear.as_bytes())
            .expect("XChaCha20-Poly1305 seals any length");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{PREFIX}{}:{}", self.id, B64.encode(blob))
    }

    /// The clear value; a value not sealed (written by an earlier release) is returned as is.
    pub(crate) fn open(&self, stored: &str) -> Result<String, String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, b64) = rest.split_once(':').ok_or("a sealed secret is malformed")?;
        if id != self.id {
            return Err(format!("a secret is sealed with key {id}, not {}", self.id));
        }
        let blob = B64
            .decode(b64)
            .map_err(|_| "a sealed secret is not base64")?;
        if blob.len() < 24 {
            return Err("a sealed secret is truncated".into());
        }
        let nonce: [u8; 24] = blob[..24].try_into().expect("24 bytes");
        let clear = self
            .cipher
            .decrypt(&XNonce::from(nonce), &blob[24..])
            .map_err(|_| "a sealed secret does not open with the secrets key: altered")?;
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
        let sealed = b.seal("https://hooks.slack.com/services/T000/B000/XXXX");
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
