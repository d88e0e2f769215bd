//! The gateway's Ed25519 log key, which signs the audit log's checkpoints as C2SP signed notes
//! (the formats, their parsing and verification are `meshguard_tlog::note`'s), so that tools
//! no one here wrote (Go's `sumdb/note`, torchwood) can check our audit anchors.
//!
//! The key lives in a file beside the database in the Go note private-key format
//! (`PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ seed)>`), created with mode 0600 on first start.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
pub(crate) use meshguard_tlog::note::{Checkpoint, verify_checkpoint};
use meshguard_tlog::note::{ED25519, Vkey, key_id, signature_line};

use super::merkle::Hash;

/// The log's signing key; its name is the checkpoint origin.
#[derive(Clone)]
pub(crate) struct LogKey {
    name: String,
    secret: Secret,
    public: VerifyingKey,
}

/// Where the private key is: in memory (from a key file) or in a PKCS#11 token.
#[derive(Clone)]
enum Secret {
    File(Box<SigningKey>),
    Token(std::sync::Arc<crate::pkcs11::TokenKey>),
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("name", &self.name)
            .field(
                "in",
                &match &self.secret {
                    Secret::File(_) => "file",
                    Secret::Token(t) => t.name(),
                },
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read the audit log key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the audit log key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the key {path} is not a note private key (PRIVATE+KEY+name+id+key); restore it from backup (docs/keys.md)"
    )]
    Format { path: String },
    #[error(
        "the key {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}` and check who has read it"
    )]
    Mode { path: String, mode: u32 },
    #[error(
        "the key {path} is named {found:?}, not {expected:?}; for the audit key, set AUDIT_ORIGIN to the key's name"
    )]
    Origin {
        path: String,
        found: String,
        expected: String,
    },
    #[error("PKCS#11 key: {0}")]
    Token(String),
    #[error("the key {0} is in a PKCS#11 token; it cannot be written to a file")]
    NotAFile(String),
}

impl LogKey {
    /// Loads the key at `path`, or creates it (0600, write-fsync-rename) when absent.
    pub(crate) fn load_or_create(path: &Path, origin: &str) -> Result<Self, KeyError> {
        match Self::load(path, origin)? {
            Some(key) => Ok(key),
            None => {
                let key = Self::generate(origin);
                key.save(path)?;
                Ok(key)
            }
        }
    }

    /// A new key named `origin`.
    pub(crate) fn generate(origin: &str) -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::from_signing_key(origin, SigningKey::from_bytes(&seed))
    }

    fn from_signing_key(name: &str, key: SigningKey) -> Self {
        Self {
            name: name.to_owned(),
            public: key.verifying_key(),
            secret: Secret::File(Box::new(key)),
        }
    }

    /// The Ed25519 key a PKCS#11 URI names (`pkcs11.rs`), for signing as `origin`.
    pub(crate) fn from_token(uri: &str, origin: &str) -> Result<Self, KeyError> {
        let token = crate::pkcs11::TokenKey::open(uri).map_err(KeyError::Token)?;
        let public = VerifyingKey::from_bytes(&token.public()).map_err(|_| {
            KeyError::Token(format!(
                "{}: the public key is not a valid Ed25519 point",
                token.name()
            ))
        })?;
        Ok(Self {
            name: origin.to_owned(),
            public,
            secret: Secret::Token(std::sync::Arc::new(token)),
        })
    }

    /// Where the key is, for messages: `file` or the token's and object's labels.
    pub(crate) fn location(&self) -> String {
        match &self.secret {
            Secret::File(_) => "a key file".to_owned(),
            Secret::Token(t) => format!("PKCS#11 {}", t.name()),
        }
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<[u8; 64], String> {
        match &self.secret {
            Secret::File(k) => Ok(k.sign(msg).to_bytes()),
            Secret::Token(t) => t.sign(msg),
        }
    }

    /// Writes the key to `path` (0600, write-fsync-rename).
    pub(crate) fn save(&self, path: &Path) -> Result<(), KeyError> {
        let Some(text) = self.private_text() else {
            return Err(KeyError::NotAFile(self.location()));
        };
        meshguard_common::fsx::write_atomic(
            path,
            text.as_bytes(),
            meshguard_common::fsx::Mode::Private,
        )
        .map_err(|source| KeyError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The key at `path`, or None when there is no file. A key other users can read, or one
    /// for another origin, is refused.
    pub(crate) fn load(path: &Path, origin: &str) -> Result<Option<Self>, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let mode = std::fs::metadata(path)
            .map_err(|source| KeyError::Read {
                path: shown.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: shown,
                mode: mode & 0o777,
            });
        }
        let key = Self::parse(text.trim()).ok_or_else(|| KeyError::Format {
            path: shown.clone(),
        })?;
        if key.name != origin {
            return Err(KeyError::Origin {
                path: shown,
                found: key.name,
                expected: origin.to_owned(),
            });
        }
        Ok(Some(key))
    }

    fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("PRIVATE+KEY+")?;
        // Names hold no '+', base64 may: split from the left.
        let mut parts = rest.splitn(3, '+');
        let name = parts.next()?;
        let _id = parts.next()?;
        let key_b64 = parts.next()?;
        let raw = B64.decode(key_b64).ok()?;
        let (&kind, seed) = raw.split_first()?;
        if kind != ED25519 || seed.len() != 32 {
            return None;
        }
        Some(Self::from_signing_key(
            name,
            SigningKey::from_bytes(seed.try_into().ok()?),
        ))
    }

    /// The key file's text; None for a key in a token.
    fn private_text(&self) -> Option<String> {
        let Secret::File(key) = &self.secret else {
            return None;
        };
        let mut raw = vec![ED25519];
        raw.extend_from_slice(key.as_bytes());
        let id = key_id(&self.name, ED25519, self.public.as_bytes());
        Some(format!(
            "PRIVATE+KEY+{}+{}+{}\n",
            self.name,
            hex::encode(id),
            B64.encode(raw)
        ))
    }

    /// A raw Ed25519 signature with this key (for minisign-format policy bundles).
    pub(crate) fn sign_raw(&self, msg: &[u8]) -> Result<[u8; 64], String> {
        self.sign_bytes(msg)
    }

    pub(crate) fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    pub(crate) fn origin(&self) -> &str {
        &self.name
    }

    /// The verifier key: `name+<key id>+base64(0x01 ‖ public key)`.
    pub(crate) fn vkey(&self) -> String {
        self.verifier().encode()
    }

    fn verifier(&self) -> Vkey {
        Vkey {
            name: self.name.clone(),
            key_type: ED25519,
            key: self.public.to_bytes(),
        }
    }

    /// Signs `text` (which must end in a newline) as a note with one signature line.
    pub(crate) fn sign_note(&self, text: &str) -> Result<String, String> {
        sign_note_by(text, &[self])
    }

    /// One signature line of `text`.
    fn signature_line(&self, text: &str) -> Result<String, String> {
        let sig = self.sign_bytes(text.as_bytes())?;
        Ok(signature_line(&self.name, self.verifier().id(), &sig))
    }
}

/// `text` (which must end in a newline) as a note signed by every key in `keys`, in order: the
/// handoff checkpoint of a key rotation carries the new key's and the old key's signatures.
pub(crate) fn sign_note_by(text: &str, keys: &[&LogKey]) -> Result<String, String> {
    debug_assert!(text.ends_with('\n'));
    let mut note = format!("{text}\n");
    for key in keys {
        note.push_str(&key.signature_line(text)?);
    }
    Ok(note)
}

/// The checkpoint body: origin, size and base64 root, each on its line; no extension lines.
pub(crate) fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    Checkpoint::body(origin, size, root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_reject_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let key =
            LogKey::load_or_create(&dir.path().join("k"), "example.org/meshguard-audit").unwrap();
        let note = key
            .sign_note(&checkpoint_body(key.origin(), 7, &[9u8; 32]))
            .unwrap();
        let cp = verify_checkpoint(&key.vkey(), &note).unwrap();
        assert_eq!(
            (cp.size, cp.root, cp.origin.as_str()),
            (7, [9u8; 32], "example.org/meshguard-audit")
        );
        assert!(verify_checkpoint(&key.vkey(), &note.replace("\n7\n", "\n8\n")).is_err());
        let other =
            LogKey::load_or_create(&dir.path().join("k2"), "example.org/meshguard-audit").unwrap();
        assert!(verify_checkpoint(&other.vkey(), &note).is_err());
        // The same key comes back from the file.
        let again =
            LogKey::load_or_create(&dir.path().join("k"), "example.org/meshguard-audit").unwrap();
        assert_eq!(again.vkey(), key.vkey());
        assert!(LogKey::load_or_create(&dir.path().join("k"), "other/origin").is_err());
    }

    /// signed-note: a line with the log key's name and id that does not verify (forged, or of
    /// the wrong length) refuses the whole checkpoint; other keys' lines are ignored; sizes
    /// have one spelling.
    #[test]
    fn a_failing_line_of_the_log_key_or_a_second_spelling_of_the_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = LogKey::load_or_create(&dir.path().join("k"), "example.org/a").unwrap();
        let note = key
            .sign_note(&checkpoint_body(key.origin(), 7, &[9u8; 32]))
            .unwrap();
        let id = hex::decode(key.vkey().split('+').nth(1).unwrap()).unwrap();
        let line = |name: &str, blob: Vec<u8>| format!("\u{2014} {name} {}\n", B64.encode(blob));
        for (case, extra, ok) in [
            ("alone", String::new(), true),
            (
                "a forged second line by the log key",
                line("example.org/a", [&id[..], &[5u8; 64]].concat()),
                false,
            ),
            (
                "a second line by the log key of the wrong length",
                line("example.org/a", [&id[..], &[5u8; 8]].concat()),
                false,
            ),
            (
                "a witness's line",
                line(
                    "witness.example/w",
                    [&[1u8, 2, 3, 4][..], &[5u8; 72]].concat(),
                ),
                true,
            ),
        ] {
            let got = verify_checkpoint(&key.vkey(), &format!("{note}{extra}"));
            assert_eq!(got.is_ok(), ok, "{case}: {got:?}");
        }
        for size in ["+7", "07"] {
            let text = checkpoint_body(key.origin(), 7, &[9u8; 32])
                .replace("\n7\n", &format!("\n{size}\n"));
            let odd = key.sign_note(&text).unwrap();
            assert!(verify_checkpoint(&key.vkey(), &odd).is_err(), "{size}");
        }
    }
}
